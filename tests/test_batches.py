"""gcm_lasagne.batches: Table 2's preprocessing and augmentation, minibatches,
the validation split and subsets."""
import numpy as np
import pytest

from gcm_lasagne import batches
from gcm_lasagne.errors import DataError


def test_to_float_and_pixel_mean():
    X = np.random.RandomState(0).randint(0, 256, (300, 3, 4, 5)).astype(
        np.uint8)
    X[0] = 255
    f = batches.to_float(X)
    assert f.dtype == np.float32 and f.max() == 1.0 and f.min() >= 0.0
    assert batches.to_float(f) is f
    with pytest.raises(TypeError):
        batches.to_float(X.astype(np.int64))
    mean = batches.pixel_mean(X, chunk=7)
    assert mean.shape == (3, 4, 5) and mean.dtype == np.float32
    np.testing.assert_allclose(mean, X.mean(axis=0) / 255.0, rtol=1e-6)


def coordinate_images(labels, h=12, w=10):
    """Channel 0 holds row + 1, channel 1 column + 1, channel 2 label + 1:
    every pixel says where it came from and whose it is; 0 is padding."""
    n = len(labels)
    X = np.empty((n, 3, h, w), np.float32)
    X[:, 0] = np.arange(1, h + 1)[:, None]
    X[:, 1] = np.arange(1, w + 1)[None, :]
    X[:, 2] = np.asarray(labels)[:, None, None] + 1
    return X


def infer_transform(img, pad):
    """(row shift, column shift, flipped) that produced an augmented
    coordinate image."""
    r, c = np.argwhere(img[0] > 0)[0]
    dy = int(img[0, r, c]) - 1 - r
    row = img[1, r][img[1, r] > 0]
    flipped = bool(row[0] > row[-1])
    cc = img.shape[2] - 1 - c if flipped else c
    dx = int(img[1, r, c]) - 1 - cc
    return dy, dx, flipped


def reference(img, dy, dx, flipped, pad):
    """The transform done the slow, obvious way."""
    h, w = img.shape[1:]
    padded = np.pad(img, ((0, 0), (pad, pad), (pad, pad)))
    crop = padded[:, pad + dy:pad + dy + h, pad + dx:pad + dx + w]
    return crop[:, :, ::-1] if flipped else crop


def test_augment_covers_every_shift_and_flip_exactly():
    labels = np.arange(3000) % 10
    X = coordinate_images(labels)
    out = batches.augment(X, np.random.RandomState(1), pad=4, flip=True)
    assert out.shape == X.shape and out.dtype == np.float32
    assert out is not X and (X == coordinate_images(labels)).all()
    seen = set()
    for img, label in zip(out, labels):
        dy, dx, flipped = infer_transform(img, 4)
        seen.add((dy, dx, flipped))
        # Padding is zeros and every other pixel is where it belongs.
        np.testing.assert_array_equal(
            img, reference(coordinate_images([label])[0], dy, dx, flipped, 4))
    assert {s[0] for s in seen} == set(range(-4, 5))
    assert {s[1] for s in seen} == set(range(-4, 5))
    assert len(seen) == 9 * 9 * 2  # all combinations, independently drawn
    flips = sum(infer_transform(img, 4)[2] for img in out[:1000])
    assert 400 < flips < 600


def test_augment_uint8_and_reproducible():
    X = np.random.RandomState(0).randint(0, 256, (64, 3, 32, 32)).astype(
        np.uint8)
    a = batches.augment(X, np.random.RandomState(7))
    b = batches.augment(X, np.random.RandomState(7))
    c = batches.augment(X, np.random.RandomState(8))
    assert a.dtype == np.uint8 and a.shape == X.shape
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()
    np.testing.assert_array_equal(
        batches.augment(X, np.random.RandomState(0), pad=0, flip=False), X)


def test_minibatches_keep_labels_with_images_and_cover_the_epoch():
    labels = np.random.RandomState(3).randint(0, 10, 1003).astype(np.int32)
    X = coordinate_images(labels, 8, 8)
    X[:, 0, 0, 0] = np.arange(1003) + 1000  # an id in a corner pixel
    rng = np.random.RandomState(0)
    sizes, ids = [], []
    for Xb, yb in batches.iterate_minibatches(
            X, labels, 128, shuffle=True, rng=rng,
            augment_fn=lambda b: batches.augment(b, rng, pad=2)):
        sizes.append(len(yb))
        for img, label in zip(Xb, yb):
            assert set(np.unique(img[2])) <= {0, label + 1}
    assert sizes == [128] * 7 + [107]
    for Xb, yb in batches.iterate_minibatches(X, labels, 128, shuffle=True,
                                           rng=rng):
        ids += list(Xb[:, 0, 0, 0].astype(int) - 1000)
        np.testing.assert_array_equal(yb, labels[Xb[:, 0, 0, 0].astype(int)
                                                 - 1000])
    assert sorted(ids) == list(range(1003)) and ids != sorted(ids)
    plain = list(batches.iterate_minibatches(X, labels, 500))
    assert [len(b[1]) for b in plain] == [500, 500, 3]
    np.testing.assert_array_equal(np.concatenate([b[0] for b in plain]), X)
    with pytest.raises(ValueError):
        next(batches.iterate_minibatches(X, labels, 10, shuffle=True))


def test_split_validation_is_stratified_disjoint_and_reproducible():
    y = np.repeat(np.arange(10), 50).astype(np.int32)
    X = np.arange(500)
    (Xt, yt), (Xv, yv) = batches.split_validation(X, y, 100, seed=4)
    assert len(Xv) == 100 and len(Xt) == 400
    assert set(Xt).isdisjoint(Xv) and set(Xt) | set(Xv) == set(range(500))
    np.testing.assert_array_equal(y[Xv], yv)
    np.testing.assert_array_equal(np.bincount(yv), [10] * 10)
    again = batches.split_validation(X, y, 100, seed=4)[1][0]
    other = batches.split_validation(X, y, 100, seed=5)[1][0]
    np.testing.assert_array_equal(again, Xv)
    assert set(other) != set(Xv)
    # Shares that do not divide evenly still add up.
    (_, _), (Xv, yv) = batches.split_validation(X[:37], y[:37], 7, seed=0)
    assert len(Xv) == 7
    with pytest.raises(DataError):
        batches.split_validation(X, y, 500)


def test_subset_is_reproducible():
    X, y = np.arange(1000), np.arange(1000) % 10
    Xs, ys = batches.subset(X, y, 100, seed=2)
    assert len(set(Xs)) == 100 and (y[Xs] == ys).all()
    np.testing.assert_array_equal(batches.subset(X, y, 100, seed=2)[0], Xs)
    assert set(batches.subset(X, y, 100, seed=3)[0]) != set(Xs)
    with pytest.raises(DataError):
        batches.subset(X, y, 1001)
