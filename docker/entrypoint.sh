#!/bin/sh
# Entry point of the gcm-lasagne image.
#
# Theano falls back to the CPU, with only a logged error, when it was asked
# for a GPU (THEANO_FLAGS device=cuda*) and cannot start one. Check first,
# and stop with a one-line reason and status 1 rather than train for days on
# the CPU. GCM_SKIP_DEVICE_CHECK=1 skips the check (e.g. for a shell in a
# GPU image on a machine without a GPU).
set -e
if [ "${GCM_SKIP_DEVICE_CHECK:-0}" != 1 ]; then
    python -m gcm_lasagne.device
fi
exec "$@"
