#!/bin/bash
# emporium-healthcheck PORT [PATH]: exits 0 when GET http://127.0.0.1:PORT/PATH answers 200.
#
# The runtime image is debian:bookworm-slim without curl or wget, so this speaks HTTP/1.1 through
# bash's /dev/tcp. Used by the Compose healthchecks; Kubernetes probes the HTTP endpoints itself.
# PATH defaults to /health/ready (503 while a dependency such as the database is down); use
# /health/live for "the process answers at all".
set -euo pipefail
port=${1:?usage: emporium-healthcheck PORT [PATH]}
path=${2:-/health/ready}
exec 3<>"/dev/tcp/127.0.0.1/${port}"
printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nConnection: close\r\n\r\n' "$path" "$port" >&3
IFS= read -r -t 5 status <&3 || { echo "no answer from 127.0.0.1:${port}${path}" >&2; exit 1; }
status=${status%$'\r'}
case $status in
  "HTTP/1.1 200 "* | "HTTP/1.0 200 "*) exit 0 ;;
  *) echo "127.0.0.1:${port}${path}: ${status}" >&2; exit 1 ;;
esac
