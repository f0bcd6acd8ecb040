"""How faithful are attribution maps to the model? Perturbation metrics and
the randomisation sanity check, for maps from gcm_lasagne/attribution.py.

- Deletion and insertion (Petsiuk et al., RISE, 2018): pixels (all channels
  at once) are removed from the image, or added to a baseline image, in the
  map's order, most relevant first, `steps` equal steps from none to all;
  the target class's softmax probability at each step is the curve, its
  trapezoid area over [0, 1] the number. Deletion: lower is better;
  insertion: higher. Removed pixels are filled by a baseline: 'black',
  'mean' (the per-channel mean of the evaluated images: the data's grey,
  not each image's own colour), or 'blur' (a Gaussian-blurred copy of the
  image, sigma 2 pixels).
- ROAD (Rong et al., ICML 2022): remove 10%..90% of the pixels most
  relevant first (MoRF, lower is better) or least relevant first (LeRF,
  higher is better) and fill each removed pixel by noisy linear imputation:
  every removed pixel equals the weighted mean of its 8 neighbours (1/6
  for the 4 sharing an edge, 1/12 for the diagonals, renormalised at the
  border), one sparse linear system per image and mask, then Gaussian
  noise. Filling from the neighbours leaks no shape of the mask, which
  filling with a constant does. The number is the fraction of images still
  given the target class.
- Randomisation (Adebayo et al., NeurIPS 2018, cascading): the layers are
  re-initialised one after another from the top, and after each the maps
  are compared with the trained model's by Spearman rank correlation, per
  image. A map that explains the model must change when the model does.
  The signed maps are ranked, as the perturbation metrics rank them. A
  constant map has no ranking and counts as correlation 0.

Pixel order: larger map values first; ties are broken by one fixed random
permutation of the pixels, so a flat map is not read in raster order.
"""
import lasagne
import numpy as np

from .batches import to_float
from .layers import PixelMeanLayer
from .models import build_model

BASELINES = ('black', 'mean', 'blur')
ROAD_FRACTIONS = tuple(np.arange(1, 10) / 10.0)
BLUR_SIGMA = 2.0
ROAD_NOISE = 0.01   # standard deviation on the [0, 1] pixel scale
# ROAD's neighbour weights: (row offset, column offset, weight)
NEIGHBOURS = ((-1, 0, 1 / 6.), (1, 0, 1 / 6.), (0, -1, 1 / 6.),
              (0, 1, 1 / 6.), (-1, -1, 1 / 12.), (-1, 1, 1 / 12.),
              (1, -1, 1 / 12.), (1, 1, 1 / 12.))


# ------------------------------------------------------------ pixel order

def pixel_ranks(maps, seed=0):
    """(B, R*C) rank of each pixel, 0 = most relevant (largest value)."""
    flat = np.asarray(maps).reshape(len(maps), -1)
    tie = np.random.RandomState(seed).permutation(flat.shape[1])
    order = np.lexsort((np.broadcast_to(tie, flat.shape), -flat), axis=-1)
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(flat.shape[1])[None], axis=1)
    return ranks


def baseline_images(X, baseline, mean=None):
    """The images that removed pixels are filled from."""
    from scipy.ndimage import gaussian_filter
    if baseline == 'black':
        return np.zeros_like(X)
    if baseline == 'mean':
        mean = X.mean(axis=(0, 2, 3)) if mean is None else np.asarray(mean)
        return np.broadcast_to(mean.astype(X.dtype)[None, :, None, None],
                               X.shape).copy()
    if baseline == 'blur':
        return gaussian_filter(X, (0, 0, BLUR_SIGMA, BLUR_SIGMA),
                               mode='nearest').astype(X.dtype)
    raise ValueError('unknown baseline %r (choose from %s)'
                     % (baseline, ', '.join(BASELINES)))


# ------------------------------------------------- deletion, insertion

def step_counts(pixels, steps):
    return np.round(np.arange(steps + 1) * pixels / float(steps)).astype(int)


def perturbation_curves(prob_fn, X, targets, maps, fill, steps=16, seed=0,
                        chunk=32):
    """Deletion and insertion curves, (B, steps + 1) each: the target's
    probability with the k most relevant pixels replaced by `fill`
    (deletion) or `fill` with them put back (insertion), k = 0, P/steps,
    ..., P. prob_fn maps float images to (B, K) probabilities."""
    X = to_float(X)
    ranks = pixel_ranks(maps, seed).reshape(len(X), 1, *X.shape[2:])
    counts = step_counts(ranks[0].size, steps)
    deletion = np.empty((len(X), steps + 1))
    insertion = np.empty_like(deletion)
    inner = counts[1:-1, None, None, None, None]
    for i in range(0, len(X), chunk):
        x, f, r = X[i:i + chunk], fill[i:i + chunk], ranks[i:i + chunk]
        gone = r[None] < inner  # (S-1, b, 1, R, C)
        # the curves' ends are the image and the fill: each computed once
        batch = np.concatenate([x[None], np.where(gone, f, x), f[None],
                                np.where(gone, x, f)])
        prob = prob_fn(batch.reshape((-1,) + X.shape[1:]))
        prob = prob.reshape(2 * steps, len(x), -1)
        p = prob[:, np.arange(len(x)), targets[i:i + chunk]].T  # (b, 2S)
        deletion[i:i + chunk] = np.c_[p[:, :steps], p[:, steps]]
        insertion[i:i + chunk] = np.c_[p[:, steps:], p[:, 0]]
    return deletion, insertion


def area(curves):
    """Trapezoid area under curves sampled evenly on [0, 1]."""
    curves = np.asarray(curves, np.float64)
    steps = curves.shape[-1] - 1
    return (curves.sum(axis=-1) - 0.5 * (curves[..., 0] + curves[..., -1])
            ) / steps


# ------------------------------------------------------------ ROAD

def _weight_sums(rows, cols):
    total = np.zeros((rows, cols))
    r, c = np.mgrid[:rows, :cols]
    for dr, dc, w in NEIGHBOURS:
        total += w * ((r + dr >= 0) & (r + dr < rows) & (c + dc >= 0)
                      & (c + dc < cols))
    return total


def imputation_system(images, removed):
    """The linear system of noisy linear imputation without the noise, for
    images (M, D, R, C) and their removed pixels (M, R, C) at once (one
    block per image, one factorisation for all): (band, b, unknown) with
    `unknown` the flat indices (n,) of the removed pixels into (M, R, C)
    and A x = b giving their values, one column per channel. Each removed
    pixel is the weighted mean of its neighbours inside the image; its
    equation is multiplied by the sum of those weights, which makes A
    symmetric. In row-major pixel order a pixel's neighbours are at most
    one image row away, so A is banded: `band` holds its lower band as
    LAPACK's banded Cholesky takes it (band[i - j, j] = A[i, j])."""
    M, D, R, C = images.shape
    unknown = np.flatnonzero(np.asarray(removed).ravel())
    n = len(unknown)
    index = np.full(M * R * C, -1)
    index[unknown] = np.arange(n)
    m, r, c = np.unravel_index(unknown, (M, R, C))
    pixels = images.transpose(0, 2, 3, 1).reshape(-1, D)
    # the furthest later neighbour, (r+1, c+1), is at most C+1 unknowns on
    band = np.zeros((C + 2, n))
    band[0] = _weight_sums(R, C)[r, c]
    b = np.zeros((n, D))
    for dr, dc, w in NEIGHBOURS:
        rr, cc = r + dr, c + dc
        inside = np.flatnonzero((rr >= 0) & (rr < R) & (cc >= 0) & (cc < C))
        q = (m[inside] * R + rr[inside]) * C + cc[inside]
        j = index[q]
        free = j >= 0
        if (dr, dc) > (0, 0):  # a later pixel: below the diagonal
            band[j[free] - inside[free], inside[free]] = -w
        # each removed pixel has at most one neighbour per offset
        b[inside[~free]] += w * pixels[q[~free]]
    used = np.flatnonzero(band.any(axis=1))
    return band[:used[-1] + 1] if n else band[:1], b, unknown


def impute(images, removed, noise=ROAD_NOISE, rng=None):
    """images (M, D, R, C) with their `removed` (M, R, C) pixels filled by
    noisy linear imputation, clipped to [0, 1]. Solvable whenever each
    image keeps a pixel: every connected group of removed pixels then
    borders a kept one, which makes the symmetric matrix irreducibly
    diagonally dominant, so positive definite. Its banded Cholesky, with
    the system built, measured on 32 images of 32x32 with 10-90% of the
    pixels removed in a random map's order: 1.3-2.6x faster than the
    banded LU it replaced, which was twice as fast as SuperLU."""
    from scipy.linalg import solveh_banded
    images = np.asarray(images)
    band, b, unknown = imputation_system(images, removed)
    M, D, R, C = images.shape
    pixels = images.transpose(0, 2, 3, 1).reshape(-1, D).astype(np.float64)
    if len(unknown):
        x = solveh_banded(band, b, overwrite_ab=True, lower=True,
                          check_finite=False)
        if noise:
            x += (rng or np.random.RandomState(0)).normal(0, noise, x.shape)
        pixels[unknown] = x
    out = pixels.reshape(M, R, C, D).transpose(0, 3, 1, 2)
    return np.clip(out, 0, 1).astype(images.dtype)


def road(predict_fn, X, targets, maps, fractions=ROAD_FRACTIONS,
         noise=ROAD_NOISE, seed=0):
    """(MoRF, LeRF): (B, F) booleans, whether the model still gives the
    target class after the given fractions of the most (least) relevant
    pixels were imputed. predict_fn maps float images to (B, K) scores."""
    X = to_float(X)
    ranks = pixel_ranks(maps, seed).reshape(len(X), *X.shape[2:])
    pixels = ranks[0].size
    rng = np.random.RandomState(seed)
    kept = []
    for most_first in (True, False):
        imputed = np.empty((len(fractions),) + X.shape, X.dtype)
        for k, fraction in enumerate(fractions):
            count = int(round(fraction * pixels))
            removed = (ranks < count if most_first
                       else ranks >= pixels - count)
            imputed[k] = impute(X, removed, noise, rng)
        scores = predict_fn(imputed.reshape((-1,) + X.shape[1:]))
        predicted = scores.argmax(axis=1).reshape(len(fractions), len(X))
        kept.append((predicted == np.asarray(targets)[None]).T)
    return tuple(kept)


# ------------------------------------------------------------ randomisation

def layer_blocks(net):
    """[(name, params)] of the layers with weights, top (output) first; a
    convolution and its batch norm are one block (conv3, conv3_bn). The
    CNN's pixel mean is not learned by gradient and stays."""
    blocks = {}
    for layer in lasagne.layers.get_all_layers(net['prob']):
        params = layer.get_params()
        if params and not isinstance(layer, PixelMeanLayer):
            key = (layer.name or 'layer%d' % len(blocks)).split('_bn')[0]
            blocks.setdefault(key, []).extend(params)
    return list(reversed(list(blocks.items())))


def spearman(a, b):
    """Spearman rank correlation of each pair of maps (B,), 0 where either
    map is constant."""
    from scipy.stats import rankdata
    ra = rankdata(np.asarray(a).reshape(len(a), -1), axis=1)
    rb = rankdata(np.asarray(b).reshape(len(b), -1), axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    denom = np.sqrt((ra ** 2).sum(axis=1) * (rb ** 2).sum(axis=1))
    with np.errstate(invalid='ignore', divide='ignore'):
        rho = (ra * rb).sum(axis=1) / denom
    return np.where(denom > 0, rho, 0.0)


def randomisation_check(attribution, fresh_net, X, targets, methods,
                        progress=None):
    """Cascading model randomisation. `fresh_net` is a newly initialised
    network of the same architecture (its values are the re-initialised
    weights). Returns (block names, {method: (blocks, B) Spearman}). The
    trained weights are restored afterwards, also on an error."""
    net = attribution.net
    trained = lasagne.layers.get_all_params(net['prob'])
    fresh = dict(zip(trained, lasagne.layers.get_all_param_values(
        fresh_net['prob'])))
    saved = [p.get_value() for p in trained]
    reference = {m: attribution.maps(m, X, targets) for m in methods}
    blocks = layer_blocks(net)
    rho = {m: np.empty((len(blocks), len(X))) for m in methods}
    try:
        for k, (name, params) in enumerate(blocks):
            for p in params:
                p.set_value(fresh[p])
            for m in methods:
                rho[m][k] = spearman(reference[m],
                                     attribution.maps(m, X, targets))
            if progress:
                progress(k + 1, len(blocks))
    finally:
        for p, v in zip(trained, saved):
            p.set_value(v)
    return [name for name, _ in blocks], rho


def fresh_network(meta, seed=0):
    """A newly initialised network of a saved model's architecture: the
    re-initialised weights of the randomisation check."""
    previous = lasagne.random.get_rng()
    lasagne.random.set_rng(np.random.RandomState(seed))
    try:
        return build_model(meta['model'], len(meta['classes']),
                           tuple(meta['input_shape']))
    finally:
        lasagne.random.set_rng(previous)
