#!/bin/sh
# Score an image with curl and JSON (proto/README.md §1-§4): POST /v1/score, print the JSON answer.
#
#   examples/curl/score.sh [URL] [IMAGE.png|IMAGE.jpg] [PROMPT]
#
# URL defaults to $REWARDFLOW_URL or http://127.0.0.1:8101 (the jpeg service of `rewardflow stack up`).
# Without IMAGE it sends one 1x2 raw image (yellow, cyan). REWARDFLOW_API_KEY, when set, is sent as a bearer
# token. Exits non-zero (and prints the service's error body) on any HTTP error.
set -eu

url=${1:-${REWARDFLOW_URL:-http://127.0.0.1:8101}}
image=${2:-}
prompt=${3:-an example image}

if [ -n "$image" ] && [ ! -r "$image" ]; then
  echo "score.sh: $image: no such readable file" >&2
  exit 2
fi
case "$image" in
  "") images='[{"format": "raw", "shape": [1, 2, 3], "data": "//8AAP//"}]' ;;
  *.png | *.PNG) images='[{"format": "png", "data": "'"$(base64 < "$image" | tr -d '\n')"'"}]' ;;
  *.jpg | *.jpeg | *.JPG | *.JPEG) images='[{"format": "jpeg", "data": "'"$(base64 < "$image" | tr -d '\n')"'"}]' ;;
  *) echo "score.sh: $image: expected a .png, .jpg or .jpeg file" >&2; exit 2 ;;
esac

# The prompt goes through a JSON string literal: escape backslashes and double quotes.
prompt_json=$(printf '%s' "$prompt" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')
auth=${REWARDFLOW_API_KEY:+Authorization: Bearer $REWARDFLOW_API_KEY}

# A request id of its own for every run: a service answers a reused id with another body with a 422.
request_id="curl-example-$(date +%s)-$$"

# The body goes on stdin (--data-binary @-), so a large image does not hit the argument-length limit.
printf '{"version": 1, "id": "%s", "images": %s, "prompts": ["%s"]}' "$request_id" "$images" "$prompt_json" |
  curl -sS --fail-with-body "$url/v1/score" \
    -H 'Content-Type: application/json' \
    ${auth:+-H "$auth"} \
    --data-binary @-
echo
