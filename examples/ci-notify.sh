#!/usr/bin/env sh
# Post (or update) a CI status line in a Concord channel.
#
#   CONCORD_SERVER=https://chat.example.com CONCORD_TOKEN=... \
#     examples/ci-notify.sh releases "build 1234" success
#
# The same KEY (default: the CI run id) edits the earlier chat instead of posting
# a new one, so a retried job never double-posts: "building" becomes "success".
# Exit codes are concordctl's: 3 bad token, 4 unknown channel, 6 unreachable...
set -eu

channel="${1:?usage: ci-notify.sh CHANNEL WHAT STATUS [KEY]}"
what="${2:?usage: ci-notify.sh CHANNEL WHAT STATUS [KEY]}"
status="${3:?usage: ci-notify.sh CHANNEL WHAT STATUS [KEY]}"
key="${4:-ci-${GITHUB_RUN_ID:-${CI_PIPELINE_ID:-local}}}"

case "$status" in
  success) icon="✅" ;;
  failure) icon="❌" ;;
  *) icon="⏳" ;;
esac

url="${GITHUB_SERVER_URL:-}${GITHUB_REPOSITORY:+/$GITHUB_REPOSITORY/actions/runs/$GITHUB_RUN_ID}"
text="$icon $what: $status${url:+ — $url}"

exec "${CONCORDCTL:-concordctl}" send "$channel" "$text" --key "$key"
