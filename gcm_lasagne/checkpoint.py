"""Saving and loading models and training state as plain .npz files.

A file holds the network's parameter values in Lasagne's order (arr_0,
arr_1, ... as `np.savez(*get_all_param_values(net))` writes them, BN
averages and the CNN's pixel mean included), a JSON `meta` string (model
name, classes, input shape, the training config) and, for a training
checkpoint, more named arrays (momentum buffers, RNG state). Nothing in it
needs pickle, so it loads with allow_pickle=False.

Loading checks a file against its own description before anything uses
it: the meta names a known model, its classes and input shape; the
parameter arrays are exactly those of that network, each of its shape, of
a float dtype and finite. Float arrays other than float32 (float64 from
another tool, say) are converted to float32, and must still be finite
after that. Anything else is a CheckpointError naming the array.
"""
import contextlib
import io
import json
import os
import re
import signal
import tempfile
import threading
import time
import zipfile

import numpy as np
import lasagne
import theano

from .models import MODELS, build_model

floatX = theano.config.floatX
# what a training checkpoint holds besides the parameters (train.py)
TRAINING_STATE = re.compile(r'(velocity_\d+|epoch|rng_keys|rng_pos|rng_gauss)$')
PARAMETER = re.compile(r'arr_(0|[1-9]\d*)$')  # not arr_00, a second arr_0


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
    named.update(arrays)
    for name, value in sorted(named.items()):
        # the last guard: no model with a NaN or inf is ever written
        if value.dtype.kind == 'f' and not np.isfinite(value).all():
            raise CheckpointError('not writing %s: %s holds NaN or infinite '
                                  'values' % (path, name))
    named['meta'] = np.array(json.dumps(meta, sort_keys=True))
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, suffix='.tmp.npz')
    except OSError as e:
        raise CheckpointError('cannot write %s (%s)' % (path, e.strerror or e))
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it owner-only
        with _ctrl_c_deferred():
            # The archive is built in memory (a model is a few MB): a zip
            # writer on a file that fails half-way (a full disk) cannot
            # close itself and prints a traceback when it is collected.
            archive = io.BytesIO()
            np.savez(archive, **named)
            with os.fdopen(fd, 'wb') as f:
                f.write(archive.getbuffer())
                f.flush()
                os.fsync(f.fileno())
            # tests/test_crash.py kills a training process here, between
            # the complete temporary file and the rename; nothing else
            # sets this variable
            time.sleep(float(os.environ.get('GCM_TEST_PAUSE_BEFORE_RENAME',
                                            0)))
            os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, OSError):  # a full disk, a read-only folder
            raise CheckpointError('cannot write %s (%s); %s' % (
                path, e.strerror or e, 'the previous file is unchanged'
                if os.path.exists(path) else 'nothing was written'))
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
    """(meta dict, parameter values list, dict of the other arrays), the
    file checked as far as it can be without building the network: the
    parameters are float32 and finite; `load` checks their shapes."""
    if not os.path.isfile(path):
        raise CheckpointError('no model file at %s' % path)
    if os.path.getsize(path) == 0:
        raise CheckpointError('%s is empty (0 bytes), not a model file'
                              % path)
    if not zipfile.is_zipfile(path):
        raise CheckpointError('%s is not a gcm-lasagne model file (not an '
                              '.npz archive; truncated?)' % path)
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError, MemoryError,
            zipfile.BadZipFile) as e:
        raise CheckpointError('%s is not a gcm-lasagne model file (%s)'
                              % (path, e))
    if 'meta' not in arrays:
        raise CheckpointError('%s is not a gcm-lasagne model file (no meta '
                              'array)' % path)
    meta = _meta(path, arrays.pop('meta'))
    indices = set()
    for name in arrays:
        match = PARAMETER.match(name)
        if match:
            indices.add(int(match.group(1)))
        elif not TRAINING_STATE.match(name):
            raise CheckpointError('%s holds an array %r that no model file '
                                  'has' % (path, name))
    for i in range(len(indices)):
        if i not in indices:
            raise CheckpointError('%s lacks parameter array arr_%d (it has '
                                  '%d, up to arr_%d)' % (path, i, len(indices),
                                                        max(indices)))
    values = [checked_float(path, 'arr_%d' % i, arrays.pop('arr_%d' % i))
              for i in range(len(indices))]
    return meta, values, arrays


def _meta(path, array):
    """The JSON description, with what it takes to rebuild the network."""
    try:
        meta = json.loads(str(array)) if array.dtype.kind == 'U' else None
    except ValueError as e:
        raise CheckpointError('%s: its meta is not JSON (%s)' % (path, e))
    if not isinstance(meta, dict):
        raise CheckpointError('%s: its meta is not a JSON object' % path)
    if meta.get('model') not in MODELS:
        raise CheckpointError('%s: unknown model %r (expected one of %s)'
                              % (path, meta.get('model'), ', '.join(MODELS)))
    classes = meta.get('classes')
    if (not isinstance(classes, list) or len(classes) < 2
            or not all(isinstance(c, str) and c for c in classes)
            or len(set(classes)) != len(classes)):
        raise CheckpointError('%s: classes must be a list of at least 2 '
                              'different names, not %r' % (path, classes))
    shape = meta.get('input_shape')
    if (not isinstance(shape, list) or len(shape) != 3 or shape[0] != 3
            or not all(type(n) is int and n > 0 for n in shape)):
        raise CheckpointError('%s: input_shape must be [3, rows, cols], not '
                              '%r' % (path, shape))
    return meta


def checked_float(path, name, value):
    """A file's float array as floatX, refused if not float or finite."""
    if value.dtype.kind != 'f':
        raise CheckpointError('%s: %s is %s, expected float32 (or another '
                              'float type)' % (path, name, value.dtype))
    with np.errstate(over='ignore'):  # too large for float32: inf, refused
        cast = value.astype(floatX, copy=False)
    if not np.isfinite(cast).all():
        raise CheckpointError('%s: %s holds NaN or infinite values%s'
                              % (path, name, '' if value.dtype == cast.dtype
                                 else ' as %s' % floatX))
    return cast


def set_values(net, values, path):
    """Set the network's parameters to a file's values, checked one by one
    against the parameters' shapes."""
    params = lasagne.layers.get_all_params(net['prob'])
    for i, (param, value) in enumerate(zip(params, values)):
        expected = param.get_value(borrow=True).shape
        if value.shape != expected:
            raise CheckpointError('%s: arr_%d (%s) has shape %s, expected %s'
                                  % (path, i, param, value.shape, expected))
    if len(values) < len(params):
        raise CheckpointError('%s lacks arr_%d (%s): it has %d parameter '
                              'arrays, its model %d'
                              % (path, len(values), params[len(values)],
                                 len(values), len(params)))
    if len(values) > len(params):
        raise CheckpointError('%s has %d parameter arrays, its model %d: '
                              'arr_%d and after are extra'
                              % (path, len(values), len(params), len(params)))
    for param, value in zip(params, values):
        param.set_value(value)


def load(path, input_var=None):
    """Rebuild the network a file was saved from and set its parameters.
    Returns (net, meta, other arrays)."""
    meta, values, arrays = read(path)
    try:
        net = build_model(meta['model'], len(meta['classes']),
                          tuple(meta['input_shape']), input_var=input_var)
    except ValueError as e:
        raise CheckpointError('%s does not match its model description (%s)'
                              % (path, e))
    set_values(net, values, path)
    return net, meta, arrays
