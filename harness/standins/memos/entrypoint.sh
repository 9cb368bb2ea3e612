#!/bin/sh
# Entrypoint of the test suite's Memos stand-in image, with the upstream image's rules for the DSN:
# MEMOS_DSN_FILE names a file whose content is exported as MEMOS_DSN; setting both is an error.
# It is the only *_FILE variable the upstream entrypoint supports.
set -eu
if [ -n "${MEMOS_DSN_FILE:-}" ]; then
  if [ -n "${MEMOS_DSN:-}" ]; then
    echo "error: MEMOS_DSN and MEMOS_DSN_FILE are both set; use only one" >&2
    exit 1
  fi
  MEMOS_DSN=$(cat "$MEMOS_DSN_FILE")
  export MEMOS_DSN
fi
exec "$@"
