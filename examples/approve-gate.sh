#!/usr/bin/env sh
# A CI gate: ask in a channel, then wait for someone to answer "approve".
#
#   CONCORD_SERVER=... CONCORD_TOKEN=... examples/approve-gate.sh releases "deploy v1.2 to prod?" 600
#
# Exits 0 when a chat starting with "approve" arrives (optionally only from
# APPROVERS, a space-separated list of user names), 1 on "deny", and 124 when
# nobody answered within TIMEOUT seconds: the job fails closed.
set -eu

channel="${1:?usage: approve-gate.sh CHANNEL QUESTION [TIMEOUT]}"
question="${2:?usage: approve-gate.sh CHANNEL QUESTION [TIMEOUT]}"
timeout="${3:-600}"
concordctl="${CONCORDCTL:-concordctl}"

authors=""
for name in ${APPROVERS:-}; do
  authors="$authors --author $name"
done

# Answers count from the moment the question was posted (its createdAt, epoch
# ms), even one that arrives before `wait` has connected.
asked=$("$concordctl" send "$channel" "🚦 $question — answer 'approve' or 'deny' (${timeout}s)" --json)
asked_ms=$(printf '%s\n' "$asked" | sed -n 's/.*"createdAt": *\([0-9]*\).*/\1/p' | head -n 1)

set +e
# shellcheck disable=SC2086 # $authors is a list of flags on purpose
answer=$("$concordctl" wait "$channel" --match '^(approve|deny)\b' $authors \
  --since "$asked_ms" --timeout "$timeout")
code=$?
set -e

if [ "$code" -ne 0 ]; then
  echo "approve-gate: no answer (exit $code)" >&2
  exit "$code"
fi
echo "approve-gate: $answer"
case "$answer" in
  *deny*) exit 1 ;;
esac
exit 0
