"""Refuse to run on the CPU when a GPU was asked for.

Theano 1.0 does not fail when its GPU back-end cannot start: with
`device=cuda` and no usable GPU (no pygpu, no driver, `docker run` without
`--gpus`) it logs an error and goes on with every computation on the CPU,
many times slower. This module turns that into a clear stop:

    python -m gcm_lasagne.device        # exit 0, or 1 with a one-line reason

The Docker image runs it before its command (docker/entrypoint.sh);
`require_requested_device()` does the same check inside a program.
"""
import sys

import gcm_lasagne  # noqa: F401  (configures Theano before importing it)
import theano

GPU_DEVICE_PREFIXES = ('cuda', 'opencl')


def gpu_requested(device, contexts=''):
    """True when Theano's flags ask for a GPU (device=cuda*, opencl*, or a
    `contexts` map, which only GPUs use)."""
    return str(device).startswith(GPU_DEVICE_PREFIXES) or bool(contexts)


def _plain(exc):
    text = str(exc).strip()
    # pygpu's messages are bytes: b'Could not load "libcuda.so": ...'
    if len(text) > 3 and text[:2] in ("b'", 'b"') and text[-1] == text[1]:
        text = text[2:-1]
    return ' '.join(text.split())


def _failure_reason(device):
    """Why the GPU back-end did not start, as far as can be told after
    Theano swallowed the error: pygpu missing, or pygpu's own error when
    asked for the device again."""
    from theano import gpuarray
    if gpuarray.pygpu is None:
        return 'pygpu does not import'
    if not str(device).startswith(GPU_DEVICE_PREFIXES):
        return None
    try:
        gpuarray.pygpu.init(device)
    except Exception as e:
        return _plain(e)
    return None


def _gpu_name():
    try:
        from theano.gpuarray.type import get_context
        return get_context(None).devname
    except Exception:  # a name is a nicety; the check does not rely on it
        return 'a GPU'


def device_status(device=None, contexts=None, activated=None, reason=None):
    """(ok, one-line message) for the Theano device in use.

    Arguments default to the live Theano configuration; tests pass them.
    """
    if device is None:
        device = theano.config.device
    if contexts is None:
        contexts = theano.config.contexts
    if not gpu_requested(device, contexts):
        return True, 'Theano device: %s (no GPU requested)' % device
    if activated is None:
        from theano import gpuarray
        activated = bool(gpuarray.pygpu_activated)
        if activated:
            return True, 'Theano device: %s on %s' % (device, _gpu_name())
        if reason is None:
            reason = _failure_reason(device)
    elif activated:
        return True, 'Theano device: %s' % device
    if str(device).startswith(GPU_DEVICE_PREFIXES):
        asked = 'device=%s' % device
    else:
        asked = 'contexts=%s' % contexts
    return False, (
        'error: THEANO_FLAGS asks for %s but Theano could not start its GPU '
        'back-end%s and would silently run on the CPU; stopping (see '
        'docs/gpu.md; THEANO_FLAGS=device=cpu runs on the CPU on purpose)'
        % (asked, ' (%s)' % reason if reason else ''))


def require_requested_device():
    """Exit the process (status 1) if a GPU was asked for and is not in use;
    return the status message otherwise."""
    ok, message = device_status()
    if not ok:
        sys.stderr.write(message + '\n')
        sys.exit(1)
    return message


def main():
    print(require_requested_device())
    return 0


if __name__ == '__main__':
    sys.exit(main())
