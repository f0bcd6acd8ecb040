"""The official CIFAR-10 python archive as uint8 arrays.

Only numpy and the standard library. Nothing in an archive is unpickled
until its size and md5 match the official release; members are checked
for unsafe paths and links before anything is read or written.
"""
import hashlib
import http.client
import io
import os
import pickle
import sys
import tarfile
import tempfile
import time
import urllib.request

import numpy as np

from .archives import TAR_ERRORS, check_member, tar_error
from .errors import DataError


# SPEC.md, "CIFAR-10 facts". `load_cifar10` takes this dict as `archive` so
# tests can describe a small synthetic archive the same way.
CIFAR10 = {
    'url': 'https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz',
    'filename': 'cifar-10-python.tar.gz',
    'size': 170498071,
    'md5': 'c58f30108f718f92721af3b95e74349a',
    'member_md5': {
        'data_batch_1': 'c99cafc152244af753f735de768cd75f',
        'data_batch_2': 'd4bba439e000b95fd0a9bffe97cbabec',
        'data_batch_3': '54ebc095f3ab1f0389bbae665268c751',
        'data_batch_4': '634d18415352ddfa80567beed471001a',
        'data_batch_5': '482c414d41f54cd18b22e5b47cb7c3cb',
        'test_batch': '40351d587109b95175f43aff81a1287e',
    },
    'n_train': 50000,
    'n_test': 10000,
}
_FOLDER = 'cifar-10-batches-py/'
_TRAIN_BATCHES = ['data_batch_%d' % i for i in range(1, 6)]
_CHUNK = 1 << 20


class _BatchUnpickler(pickle.Unpickler):
    """Admits only the globals a CIFAR-10 batch pickle needs (a numpy uint8
    array), so a pickle cannot name a function to call."""

    ALLOWED = {('numpy.core.multiarray', '_reconstruct'),
               ('numpy', 'ndarray'), ('numpy', 'dtype')}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise DataError('refusing to unpickle %s.%s: not part of the CIFAR-10 '
                        'batch format' % (module, name))


def _unpickle(raw, what):
    try:
        # Written by Python 2: latin1 turns its byte strings into str keys
        # and lets numpy restore the array bytes.
        obj = _BatchUnpickler(io.BytesIO(raw), encoding='latin1').load()
    except DataError:
        raise
    except Exception as e:  # any malformed pickle, whatever it raises
        raise DataError('%s is not a valid pickle (%s: %s)'
                        % (what, type(e).__name__, e))
    if not isinstance(obj, dict):
        raise DataError('%s does not hold a dict' % what)
    # A Python 3 pickle made with bytes keys works too.
    return {k.decode('latin1') if isinstance(k, bytes) else k: v
            for k, v in obj.items()}


def _progress_line(name, done, total, t0):
    rate = done / max(time.time() - t0, 1e-6) / 1e6
    sys.stderr.write('\rdownloading %s: %.1f / %.1f MB (%d%%) %.1f MB/s '
                     % (name, done / 1e6, total / 1e6,
                        100 * done // max(total, 1), rate))
    sys.stderr.flush()


def _copy(response, f, archive, progress):
    """Stream the response into f; returns (bytes, md5 hex digest)."""
    md5, done, t0, shown = hashlib.md5(), 0, time.time(), None
    try:
        while done <= archive['size']:  # stop a runaway response
            chunk = response.read(_CHUNK)
            if not chunk:
                break
            f.write(chunk)
            md5.update(chunk)
            done += len(chunk)
            if progress and (shown is None or time.time() - shown > 0.25):
                _progress_line(archive['filename'], done, archive['size'], t0)
                shown = time.time()
        if shown is not None:
            _progress_line(archive['filename'], done, archive['size'], t0)
    finally:
        if shown is not None:
            sys.stderr.write('\n')  # end the progress line, even on error
    return done, md5.hexdigest()


def _download(archive, path, progress):
    """Fetch to a temporary name beside `path`, check size and md5, then
    rename: a half or wrong download never sits at the final name."""
    url = archive['url']
    by_hand = 'download %s and put it at %s' % (url, path)
    try:
        response = urllib.request.urlopen(url, timeout=60)
    except (OSError, http.client.HTTPException, ValueError) as e:
        reason = getattr(e, 'reason', e)
        raise DataError('no CIFAR-10 archive at %s and it could not be '
                        'downloaded (%s); %s' % (path, reason, by_hand))
    directory = os.path.dirname(path)
    with response:
        try:
            os.makedirs(directory, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix='.%s.' % archive['filename'],
                                       suffix='.part', dir=directory)
        except OSError as e:
            raise DataError('cannot write to %s (%s); %s'
                            % (directory, e.strerror or e, by_hand))
        try:
            with os.fdopen(fd, 'wb') as f:
                done, md5 = _copy(response, f, archive, progress)
            if done != archive['size'] or md5 != archive['md5']:
                raise DataError('the file downloaded from %s is not the '
                                'expected one (%d bytes, md5 %s; expected %d '
                                'bytes, md5 %s); not kept; %s'
                                % (url, done, md5, archive['size'],
                                   archive['md5'], by_hand))
            os.chmod(tmp, 0o644)  # mkstemp makes it private
            os.replace(tmp, path)
        except BaseException as e:
            if os.path.exists(tmp):
                os.remove(tmp)
            if isinstance(e, (OSError, http.client.HTTPException)):
                # A broken connection or a full disk.
                raise DataError('the download of %s failed (%s: %s); %s'
                                % (url, type(e).__name__, e, by_hand))
            raise


def _read_members(f, path, archive):
    """The batch files' bytes, read straight from the open archive. All
    members are checked for safety before any of them is unpickled."""
    wanted = {_FOLDER + b: b for b in _TRAIN_BATCHES + ['test_batch',
                                                        'batches.meta']}
    raw = {}
    try:
        with tarfile.open(fileobj=f, mode='r:gz') as tar:
            for member in tar:  # sequential: no seeking back in the gzip
                check_member(member, path)
                base = wanted.get(member.name)
                if base is None or not member.isfile():
                    continue
                if base in raw:
                    raise DataError('%s holds %s twice' % (path, member.name))
                raw[base] = tar.extractfile(member).read()
    except DataError:
        raise
    except TAR_ERRORS as e:
        raise tar_error(path, e)
    missing = [_FOLDER + b for b in wanted.values() if b not in raw]
    if missing:
        raise DataError('%s lacks %s' % (path, ', '.join(missing)))
    for base in wanted.values():
        expected = archive.get('member_md5', {}).get(base)
        if expected and hashlib.md5(raw[base]).hexdigest() != expected:
            raise DataError('%s%s in %s has the wrong md5 (expected %s)'
                            % (_FOLDER, base, path, expected))
    return raw


def _batch_arrays(d, what, n_classes):
    data, labels = d.get('data'), d.get('labels')
    if (not isinstance(data, np.ndarray) or data.dtype != np.uint8
            or data.ndim != 2 or data.shape[1] != 3072):
        raise DataError('%s: "data" is not an N x 3072 uint8 array (%s)'
                        % (what, getattr(data, 'shape', type(data).__name__)))
    try:
        y = np.asarray(labels)
    except Exception:
        y = None
    if (y is None or y.ndim != 1 or len(y) != len(data)
            or (len(y) and y.dtype.kind not in 'iu')):
        raise DataError('%s: "labels" is not a list of %d integers'
                        % (what, len(data)))
    if len(y) and (y.min() < 0 or y.max() >= n_classes):
        raise DataError('%s: labels outside 0..%d' % (what, n_classes - 1))
    # Rows are the R, G, B planes of 32x32 one after another.
    return data.reshape(-1, 3, 32, 32), y.astype(np.int32)


def load_cifar10(data_dir='data', download=True, progress=True,
                 archive=CIFAR10):
    """The official CIFAR-10 python release as uint8 arrays.

    Returns {'X_train': (50000, 3, 32, 32) uint8, 'y_train': (50000,) int32,
    'X_test', 'y_test', 'classes': the 10 names of batches.meta}.

    Uses data_dir/cifar-10-python.tar.gz if present, else downloads it
    there (unless `download` is False). Nothing is unpickled until the
    archive's size and md5 match `archive` (default: the official release,
    SPEC.md); members are read from the tar without extracting, and
    unpickled with an unpickler that admits numpy arrays only.
    """
    path = os.path.abspath(os.path.join(os.path.expanduser(data_dir),
                                        archive['filename']))
    if not os.path.exists(path):
        if not download:
            raise DataError('no CIFAR-10 archive at %s; download %s and put '
                            'it there' % (path, archive['url']))
        _download(archive, path, progress)
    try:
        f = open(path, 'rb')
    except OSError as e:
        raise DataError('cannot read %s (%s)' % (path, e.strerror or e))
    # One open file for checking and reading, so what is read is what was
    # checked.
    with f:
        size = os.fstat(f.fileno()).st_size
        md5 = (hashlib.file_digest(f, 'md5').hexdigest()
               if size == archive['size'] else None)
        if md5 != archive['md5']:
            found = ('md5 %s' % md5) if md5 else ('%d bytes' % size)
            raise DataError('%s is not the expected CIFAR-10 archive (%s; '
                            'expected %d bytes, md5 %s); delete it to '
                            'download again, or replace it with %s'
                            % (path, found, archive['size'], archive['md5'],
                               archive['url']))
        f.seek(0)
        raw = _read_members(f, path, archive)

    meta = _unpickle(raw['batches.meta'], _FOLDER + 'batches.meta')
    classes = meta.get('label_names')
    if (not isinstance(classes, list) or len(classes) != 10
            or not all(isinstance(c, (str, bytes)) for c in classes)):
        raise DataError('%sbatches.meta in %s has no list of 10 label_names'
                        % (_FOLDER, path))
    classes = [c.decode('latin1') if isinstance(c, bytes) else c
               for c in classes]
    parts = {}
    for base in _TRAIN_BATCHES + ['test_batch']:
        what = '%s%s in %s' % (_FOLDER, base, path)
        parts[base] = _batch_arrays(_unpickle(raw.pop(base), what), what, 10)
    X_train = np.concatenate([parts[b][0] for b in _TRAIN_BATCHES])
    y_train = np.concatenate([parts[b][1] for b in _TRAIN_BATCHES])
    X_test, y_test = parts['test_batch']
    for split, y, key in (('training', y_train, 'n_train'),
                          ('test', y_test, 'n_test')):
        expected = archive.get(key)
        if expected is not None and len(y) != expected:
            raise DataError('%s holds %d %s images, expected %d'
                            % (path, len(y), split, expected))
    return {'X_train': X_train, 'y_train': y_train,
            'X_test': X_test, 'y_test': y_test, 'classes': classes}
