#!/bin/sh
# Entry point of the gcm-lasagne image.
#
# Theano falls back to the CPU, with only a logged error, when it was asked
# for a GPU (THEANO_FLAGS device=cuda*) and cannot start one. Check first,
# and stop with a one-line reason and status 1 rather than train for days on
# the CPU. GCM_SKIP_DEVICE_CHECK=1 skips the check (e.g. for a shell in a
# GPU image on a machine without a GPU, or to read Theano's own messages).
set -e
if [ "${GCM_SKIP_DEVICE_CHECK:-0}" != 1 ]; then
    # Theano logs a failed GPU start (pygpu's error and a traceback) while
    # it is imported, before the check can give the reason in one line; so
    # the check's stderr is held back, and on failure only that line shown.
    # A failure without it (the check itself broke) shows everything.
    status=0
    { messages=$(python -m gcm_lasagne.device 2>&1 1>&3 3>&-) || status=$?; } 3>&1
    if [ "$status" -ne 0 ]; then
        reason=$(printf '%s\n' "$messages" | grep '^error: ' | tail -n 1) || true
        printf '%s\n' "${reason:-$messages}" >&2
        exit "$status"
    fi
    if [ -n "$messages" ]; then
        printf '%s\n' "$messages" >&2
    fi
fi
exec "$@"
