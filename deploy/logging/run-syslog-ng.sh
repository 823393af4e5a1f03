#!/bin/sh
# Start the Emporium log shipper (syslog-ng.conf beside this script) in the
# foreground as an ordinary process, with defaults for the environment it
# reads. syslog-ng itself cannot give an environment variable a default (an
# unset one expands to "" and it then ships nothing), so this script does.
#
#   EMPORIUM_LOG_FILE         default /var/log/emporium/*.log
#   ELASTICSEARCH_URL         default http://127.0.0.1:9200/logs-emporium-default/_bulk
#   EMPORIUM_SYSLOG_NG_STATE  default /var/lib/emporium-syslog-ng
#                             (persist file with the read positions, pid file,
#                             control socket; must survive restarts)
#
# Extra arguments are passed to syslog-ng (e.g. -v, -d, or -s to only check).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
: "${EMPORIUM_LOG_FILE:=/var/log/emporium/*.log}"
: "${ELASTICSEARCH_URL:=http://127.0.0.1:9200/logs-emporium-default/_bulk}"
: "${EMPORIUM_SYSLOG_NG_STATE:=/var/lib/emporium-syslog-ng}"
export EMPORIUM_LOG_FILE ELASTICSEARCH_URL

case "$ELASTICSEARCH_URL" in
  http://*/_bulk | https://*/_bulk) ;;
  *) echo "ELASTICSEARCH_URL must be an http(s) URL ending in /_bulk, got '$ELASTICSEARCH_URL'" >&2; exit 2 ;;
esac
case "$EMPORIUM_LOG_FILE" in
  /*) ;;
  *) echo "EMPORIUM_LOG_FILE must be an absolute path, got '$EMPORIUM_LOG_FILE'" >&2; exit 2 ;;
esac
log_dir=$(dirname "$EMPORIUM_LOG_FILE")
[ -d "$log_dir" ] || echo "warning: $log_dir does not exist (yet); syslog-ng will wait for it" >&2

mkdir -p "$EMPORIUM_SYSLOG_NG_STATE"
exec syslog-ng -F -e --no-caps \
  -f "$here/syslog-ng.conf" \
  -R "$EMPORIUM_SYSLOG_NG_STATE/syslog-ng.persist" \
  -p "$EMPORIUM_SYSLOG_NG_STATE/syslog-ng.pid" \
  -c "$EMPORIUM_SYSLOG_NG_STATE/syslog-ng.ctl" \
  "$@"
