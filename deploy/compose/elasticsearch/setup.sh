#!/bin/bash
# One-shot setup of the local Elasticsearch for the Compose shop (profile `observability`):
# installs deploy/logging/elasticsearch/ilm-policy.json and index-template.json, as
# deploy/logging/README.md describes, before Filebeat ships anything. The template asks for one
# replica; this single-node cluster has nowhere to put it, so the copy installed here says 0
# (the file itself is left as it is). Idempotent: PUT replaces what is there.
set -euo pipefail
ES=${ELASTICSEARCH_URL:-http://elasticsearch:9200}
DIR=${TEMPLATES_DIR:-/templates}

echo "installing the ILM policy emporium-logs into $ES"
curl -fsS -X PUT "$ES/_ilm/policy/emporium-logs" \
  -H 'Content-Type: application/json' --data-binary "@$DIR/ilm-policy.json"
echo
echo "installing the index template emporium-logs (number_of_replicas 0: single node)"
sed -E 's/"number_of_replicas": *[0-9]+/"number_of_replicas": 0/' "$DIR/index-template.json" |
  curl -fsS -X PUT "$ES/_index_template/emporium-logs" \
    -H 'Content-Type: application/json' --data-binary @-
echo
echo "done"
