"""Batches for the network: Table 2's only preprocessing (`to_float`), its
augmentation (pad-4 random crops and flips), minibatches, the validation
split and training subsets. Only numpy; every random draw comes from a
RandomState the caller passes, so a run repeats and resumes exactly."""
import numpy as np

from .errors import DataError

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
