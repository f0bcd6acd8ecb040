"""CIFAR-10 and image folders as uint8 arrays, and Table 2's augmentation.

Only numpy, Pillow and the standard library: this module must load without
Theano (the package's __init__ imports Theano; this file does not need it).

Images are kept as uint8 (N, 3, H, W) until a batch goes to the network
(`to_float`), so 50,000 CIFAR images take 150 MB rather than 600 MB.

Every problem a user can cause (a missing, corrupt or foreign file, a bad
folder layout) raises `DataError` with a one-line message; the command line
prints it as `error: <message>`.
"""
import hashlib
import http.client
import io
import os
import pickle
import re
import sys
import tarfile
import tempfile
import time
import urllib.request
import zlib

import numpy as np
from PIL import Image


class DataError(Exception):
    """Bad or missing input data. The message is always one line."""

    def __init__(self, message):
        # Messages quote paths and library errors; fold any newline so the
        # CLI's `error: <message>` stays one line.
        super().__init__(' '.join(str(message).split()))


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


# --------------------------------------------------------------- tar safety

def _check_member(member, tar_path):
    """Refuse what could write or point outside the destination: absolute
    names, `..` components, links, devices and fifos."""
    name = member.name
    parts = re.split(r'[/\\]', name)
    if (name.startswith(('/', '\\')) or re.match(r'^[A-Za-z]:', name)
            or '..' in parts):
        raise DataError('refusing %s: member %r has an unsafe path'
                        % (tar_path, name))
    if not (member.isfile() or member.isdir()):
        raise DataError('refusing %s: member %r is a link or special file'
                        % (tar_path, name))


def _tar_error(tar_path, error):
    return DataError('%s is not a readable tar.gz archive (%s: %s); it may be '
                     'truncated or corrupt' % (tar_path, type(error).__name__,
                                               error))


# Errors tarfile/gzip raise on a truncated or corrupt stream.
_TAR_ERRORS = (tarfile.TarError, EOFError, zlib.error, OSError)


def _top_folder(name):
    while name.startswith('./'):
        name = name[2:]
    return re.split(r'[/\\]', name)[0]


def extract_archive_safely(tar_path, dest):
    """Unpack a .tar / .tar.gz (e.g. an image folder) into `dest`.

    Every member is checked before anything is written, so an archive with
    an unsafe member leaves `dest` untouched. Returns the folder it unpacked
    to: the archive's single top-level folder if it has exactly one (as
    cifar10-jpeg.tar.gz does), else `dest`.
    """
    if not os.path.isfile(tar_path):
        raise DataError('no archive at %s' % os.path.abspath(tar_path))
    try:
        tar = tarfile.open(tar_path, 'r:*')
    except _TAR_ERRORS as e:
        raise _tar_error(tar_path, e)
    with tar:
        try:
            members = tar.getmembers()
        except _TAR_ERRORS as e:
            raise _tar_error(tar_path, e)
        for member in members:
            _check_member(member, tar_path)
        try:
            os.makedirs(dest, exist_ok=True)
            if hasattr(tarfile, 'data_filter'):
                # Python >= 3.11.4 also drops setuid bits and odd modes.
                tar.extractall(dest, members=members, filter='data')
            else:
                tar.extractall(dest, members=members)
        except _TAR_ERRORS as e:
            raise DataError('could not extract %s into %s (%s: %s)'
                            % (tar_path, dest, type(e).__name__, e))
    tops = {_top_folder(m.name) for m in members} - {'', '.'}
    if len(tops) == 1:
        top = os.path.join(dest, tops.pop())
        if os.path.isdir(top):
            return top
    return dest


# ------------------------------------------------------------ CIFAR-10

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


def _md5_of_file(f):
    md5 = hashlib.md5()
    for chunk in iter(lambda: f.read(_CHUNK), b''):
        md5.update(chunk)
    return md5.hexdigest()


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
                _check_member(member, path)
                base = wanted.get(member.name)
                if base is None or not member.isfile():
                    continue
                if base in raw:
                    raise DataError('%s holds %s twice' % (path, member.name))
                raw[base] = tar.extractfile(member).read()
    except DataError:
        raise
    except _TAR_ERRORS as e:
        raise _tar_error(path, e)
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
        md5 = _md5_of_file(f) if size == archive['size'] else None
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


# --------------------------------------------------------- image folders

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg')


def _visible(names):
    return sorted(n for n in names if not n.startswith('.'))


def _class_folders(split_dir):
    if not os.path.isdir(split_dir):
        raise DataError('no folder %s (an image folder holds train/<class>/ '
                        'and test/<class>/)' % split_dir)
    return [c for c in _visible(os.listdir(split_dir))
            if os.path.isdir(os.path.join(split_dir, c))]


def _image_files(split_dir, classes):
    files, labels = [], []
    for label, name in enumerate(classes):
        folder = os.path.join(split_dir, name)
        found = [os.path.join(folder, f) for f in _visible(os.listdir(folder))
                 if f.lower().endswith(IMAGE_EXTENSIONS)]
        if not found:
            raise DataError('no .png/.jpg/.jpeg images in %s' % folder)
        files += found
        labels += [label] * len(found)
    return files, np.array(labels, dtype=np.int32)


def rgb_image(im):
    """A Pillow image as 8-bit RGB, the same way for training data and for
    images to explain: grayscale and palette become RGB, alpha is dropped,
    16-bit grayscale is scaled (Pillow's own conversion would clip it)."""
    if im.mode == 'RGB':
        return im
    if im.mode.startswith('I;16') or im.mode == 'I':
        im = Image.fromarray((np.asarray(im, np.float64) / 257).round()
                             .astype(np.uint8))
    elif im.mode == 'P':
        im = im.convert('RGBA')  # honours palette transparency
    return im.convert('RGB')


def _read_image(path, size):
    """(H, W, 3) uint8 RGB."""
    try:
        with Image.open(path) as im:
            im = rgb_image(im)
            if size is not None and im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.BILINEAR)
            return np.asarray(im)  # decodes here, inside the try
    except (OSError, ValueError, SyntaxError,
            Image.DecompressionBombError) as e:
        raise DataError('cannot read image %s (%s)' % (path, e))


def _read_images(files, size, reference):
    """Stack images into (N, 3, H, W). Without `size`, the first image of
    the training set fixes the size (`reference` = [path, (H, W)])."""
    X = None
    for i, path in enumerate(files):
        img = _read_image(path, size)
        if reference[0] is None:
            reference[:] = [path, img.shape[:2]]
        if img.shape[:2] != reference[1]:
            raise DataError('%s is %dx%d (height x width) but %s is %dx%d; '
                            'images must share one size, or give an image '
                            'size to resize them all'
                            % ((path,) + img.shape[:2] + (reference[0],)
                               + tuple(reference[1])))
        if X is None:
            X = np.empty((len(files),) + img.shape, np.uint8)
        X[i] = img
    return np.ascontiguousarray(X.transpose(0, 3, 1, 2))


def load_image_folder(root, size=None):
    """Images in ROOT/train/<class>/ and ROOT/test/<class>/ (.png, .jpg,
    .jpeg; other files and names starting with '.' are ignored).

    Returns the same dict as `load_cifar10`: X uint8 (N, 3, H, W) RGB, y
    int32 indices into `classes`, the sorted class-folder names; files in
    sorted order, so loading is deterministic. Grayscale, palette and RGBA
    images become RGB (alpha dropped). All images must share one size
    unless size=(H, W) is given: then every image of another size is
    resized with Pillow's bilinear filter, which averages over the source
    area when shrinking (so it does not alias).
    """
    root = os.path.expanduser(root)
    if not os.path.isdir(root):
        raise DataError('%s is not a folder (an image folder holds '
                        'train/<class>/ and test/<class>/)' % root)
    train_dir, test_dir = os.path.join(root, 'train'), os.path.join(root,
                                                                    'test')
    classes = _class_folders(train_dir)
    if not classes:
        raise DataError('no class folders in %s' % train_dir)
    test_classes = _class_folders(test_dir)
    if test_classes != classes:
        raise DataError('train/ and test/ of %s have different class folders '
                        '(only in train: %s; only in test: %s)'
                        % (root, sorted(set(classes) - set(test_classes)),
                           sorted(set(test_classes) - set(classes))))
    if size is not None:
        size = tuple(int(s) for s in size)
        if len(size) != 2 or min(size) < 1:
            raise DataError('image size must be two positive numbers '
                            '(height, width), not %s' % (size,))
    reference = [None, size]
    out = {'classes': classes}
    for split, folder in (('train', train_dir), ('test', test_dir)):
        files, y = _image_files(folder, classes)
        out['X_' + split] = _read_images(files, size, reference)
        out['y_' + split] = y
    return out


# ---------------------------------------------- preprocessing, augmentation

def to_float(X):
    """uint8 images to float32 in [0, 1] (the only preprocessing, Table 2).
    Float input is taken as already scaled and returned as float32."""
    if X.dtype == np.uint8:
        return X.astype(np.float32) / np.float32(255)
    if X.dtype.kind != 'f':
        # Any other integer type has no agreed scale; guessing would
        # silently train on wrongly scaled pixels.
        raise TypeError('to_float takes uint8 or float images, not %s'
                        % X.dtype)
    return X.astype(np.float32, copy=False)


def pixel_mean(X, chunk=5000):
    """The mean image (C, H, W) float32 of `X` on `to_float`'s scale, for
    the CNN baseline's centring. Summed in float64 chunks: exact enough and
    no 600 MB float copy of the training set."""
    if len(X) == 0:
        raise DataError('cannot take the mean of no images')
    total = np.zeros(X.shape[1:], np.float64)
    for i in range(0, len(X), chunk):
        total += X[i:i + chunk].sum(axis=0, dtype=np.float64)
    scale = 255.0 if X.dtype == np.uint8 else 1.0
    return (total / (len(X) * scale)).astype(np.float32)


def augment(X, rng, pad=4, flip=True):
    """Table 2: zero-pad `pad` pixels on every side, crop back to H x W at
    a uniformly random offset (a shift of -pad..+pad in each axis,
    independently), and flip left-right with probability 1/2.

    X is a (N, C, H, W) batch of any dtype; returns a new array of the same
    shape and dtype. `rng` is a numpy RandomState, so a run is repeatable
    and resumes exactly from a saved state. Per batch, draws in order: row
    offsets, column offsets (if pad > 0), then flips (if flip).
    """
    X = np.asarray(X)
    n, c, h, w = X.shape
    if pad > 0:
        padded = np.zeros((n, c, h + 2 * pad, w + 2 * pad), X.dtype)
        padded[:, :, pad:pad + h, pad:pad + w] = X
        dy = rng.randint(0, 2 * pad + 1, size=n)
        dx = rng.randint(0, 2 * pad + 1, size=n)
        # A view of every h x w window: (N, C, 2p+1, 2p+1, H, W); picking
        # one window per image copies only the crops.
        windows = np.lib.stride_tricks.sliding_window_view(
            padded, (h, w), axis=(2, 3))
        out = windows[np.arange(n), :, dy, dx]
    else:
        out = X.copy()
    if flip:
        flipped = rng.randint(0, 2, size=n).astype(bool)
        out[flipped] = out[flipped, :, :, ::-1]
    return out


def iterate_minibatches(X, y, batch_size, shuffle=False, rng=None,
                        augment_fn=None):
    """Yield (Xb, yb) covering every sample exactly once. The last batch
    may be smaller: no image is dropped in any epoch (Table 2 is silent).
    With shuffle, the order is rng.permutation (rng: a RandomState, needed
    so that runs repeat). augment_fn, if given, maps each Xb."""
    if len(X) != len(y):
        raise ValueError('X and y differ in length (%d, %d)'
                         % (len(X), len(y)))
    if shuffle:
        if rng is None:
            raise ValueError('shuffle needs a RandomState rng')
        order = rng.permutation(len(X))
    for start in range(0, len(X), batch_size):
        if shuffle:
            idx = order[start:start + batch_size]
            Xb, yb = X[idx], y[idx]
        else:
            Xb, yb = X[start:start + batch_size], y[start:start + batch_size]
        if augment_fn is not None:
            Xb = augment_fn(Xb)
        yield Xb, yb


def split_validation(X, y, n_val=5000, seed=0):
    """The preliminary experiments' split (45,000 / 5,000 for CIFAR-10):
    ((X_train, y_train), (X_val, y_val)).

    Stratified: each class gives the same share to the validation set
    (500 a class for CIFAR-10; largest remainders settle rounding), chosen
    at random with RandomState(seed). Both parts keep the original order.
    """
    n = len(y)
    if not 0 < n_val < n:
        raise DataError('a validation set of %d images needs more than %d '
                        'training images (there are %d)' % (n_val, n_val, n))
    rng = np.random.RandomState(seed)
    order = rng.permutation(n)
    classes, counts = np.unique(y, return_counts=True)
    share = counts * n_val / float(n)
    quota = np.floor(share).astype(int)
    extra = np.argsort(-(share - quota), kind='stable')[:n_val - quota.sum()]
    quota[extra] += 1
    val = np.concatenate([order[y[order] == k][:q]
                          for k, q in zip(classes, quota)])
    is_val = np.zeros(n, bool)
    is_val[val] = True
    return (X[~is_val], y[~is_val]), (X[is_val], y[is_val])


def subset(X, y, n, seed=0):
    """A fixed random subset of n samples (RandomState(seed); not
    stratified), in the original order."""
    if not 0 < n <= len(y):
        raise DataError('cannot take %d of %d training images' % (n, len(y)))
    keep = np.sort(np.random.RandomState(seed).choice(len(y), n,
                                                      replace=False))
    return X[keep], y[keep]
