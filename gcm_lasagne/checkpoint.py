"""Saving and loading models and training state as plain .npz files.

A file holds the network's parameter values in Lasagne's order (arr_0,
arr_1, ... as `np.savez(*get_all_param_values(net))` writes them, BN
averages and the CNN's pixel mean included), a JSON `meta` string (model
name, classes, input shape, the training config) and, for a training
checkpoint, more named arrays (momentum buffers, RNG state). Nothing in it
needs pickle, so it loads with allow_pickle=False.
"""
import contextlib
import json
import os
import signal
import tempfile
import threading
import zipfile

import numpy as np
import lasagne

from .models import build_model


class CheckpointError(Exception):
    pass


def save(path, net, meta, **arrays):
    """Save the network's parameter values, meta and `arrays` to path."""
    write(path, meta, lasagne.layers.get_all_param_values(net['prob']),
          **arrays)


def write(path, meta, values, **arrays):
    """Write atomically: a crash leaves the old file or the new one, never a
    mix, because the rename is the only step that touches `path`."""
    named = {'arr_%d' % i: v for i, v in enumerate(values)}
    named['meta'] = np.array(json.dumps(meta, sort_keys=True))
    named.update(arrays)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, suffix='.tmp.npz')
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it owner-only
        with _ctrl_c_deferred():
            with os.fdopen(fd, 'wb') as f:
                np.savez(f, **named)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def _ctrl_c_deferred():
    """Hold a Ctrl-C that comes while the file is written until it is
    complete: interrupted inside zipfile, numpy leaves a half-closed archive
    that prints errors at exit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda *args: caught.append(args))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        if callable(previous):
            previous(*caught[0])
        raise KeyboardInterrupt


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read(path):
    """(meta dict, parameter values list, dict of the other arrays)."""
    if not os.path.isfile(path):
        raise CheckpointError('no model file at %s' % path)
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        meta = json.loads(str(arrays.pop('meta')))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise CheckpointError('%s is not a gcm-lasagne model file (%s)'
                              % (path, e))
    count = sum(1 for k in arrays if k.startswith('arr_'))
    values = [arrays.pop('arr_%d' % i) for i in range(count)]
    return meta, values, arrays


def load(path, input_var=None):
    """Rebuild the network a file was saved from and set its parameters.
    Returns (net, meta, other arrays)."""
    meta, values, arrays = read(path)
    try:
        net = build_model(meta['model'], len(meta['classes']),
                          tuple(meta['input_shape']), input_var=input_var)
        lasagne.layers.set_all_param_values(net['prob'], values)
    except (KeyError, ValueError) as e:
        raise CheckpointError('%s does not match its model description (%s)'
                              % (path, e))
    return net, meta, arrays
