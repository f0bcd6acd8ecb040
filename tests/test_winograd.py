"""Winograd's F(2x2, 3x3), F(4x4, 3x3) and F(2x2, 5x5) in the fastconv ops
(c_code/winograd.c): for every stride-1 3x3 and 5x5 layer shape of GCM,
the CNN and ResNet-20, and for odd shapes with the thresholds lowered, the
forward pass, the input gradient and the weight gradient equal the direct
convolution's within 1e-5 of the output's scale, and differ from it in the
last bits (so Winograd really ran)."""
import numpy as np
import pytest

import gcm_lasagne  # noqa: F401  (configures Theano)
import theano
import theano.tensor as T
from theano.tensor.nnet import conv2d

from gcm_lasagne import fastconv

fastconv.register()
MODE = theano.compile.get_default_mode().including('gcm_fastconv')


def conv_and_gradients(ishape, kshape, border_mode, winograd, monkeypatch,
                       defines=None):
    """A function of (images, filters, output weights) giving the
    correlation and its gradients wrt the images and the filters, compiled
    with Winograd on or off (the ops read GCM_WINOGRAD when compiled)."""
    x, w, r = T.tensor4('x'), T.tensor4('w'), T.tensor4('r')
    y = conv2d(x, w, border_mode=border_mode, filter_flip=False)
    monkeypatch.setenv('GCM_WINOGRAD', '1' if winograd else '0')
    for name, value in (defines or {}).items():
        monkeypatch.setitem(fastconv._C_DEFINES, name, value)
    fn = theano.function([x, w, r], [y] + theano.grad((y * r).sum(), [x, w]),
                         mode=MODE)
    for name in (defines or {}):
        monkeypatch.delitem(fastconv._C_DEFINES, name)
    ops = {type(node.op) for node in fn.maker.fgraph.toposort()}
    assert {fastconv.FastCorrMM, fastconv.FastCorrMM_gradInputs,
            fastconv.FastCorrMM_gradWeights} <= ops
    return fn


def compare(ishape, kshape, border_mode, monkeypatch, defines=None, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.uniform(-1, 1, ishape).astype('float32')
    W = rng.uniform(-1, 1, kshape).astype('float32')
    direct = conv_and_gradients(ishape, kshape, border_mode, False,
                                monkeypatch, defines)
    wino = conv_and_gradients(ishape, kshape, border_mode, True, monkeypatch,
                              defines)
    x, w = T.tensor4('x'), T.tensor4('w')
    yshape = conv2d(x, w, border_mode=border_mode, filter_flip=False).shape
    R = rng.uniform(-1, 1, theano.function([x, w], yshape)(X, W))
    R = R.astype('float32')
    want, got = direct(X, W, R), wino(X, W, R)
    for name, g, w in zip(('forward', 'input gradient', 'weight gradient'),
                          got, want):
        assert g.shape == w.shape, name
        scale = np.abs(w).max()
        assert scale > 0.1, name  # not an all-zero comparison
        assert np.abs(g - w).max() <= 1e-5 * scale, (
            name, np.abs(g - w).max() / scale)
        # Winograd sums in another order: were the bits all equal, the
        # direct code would have run
        assert not np.array_equal(g, w), name
    again = wino(X, W, R)
    for g, a in zip(got, again):
        assert np.array_equal(g, a)  # the same bits run to run
    return got


# (channels in, channels out, image side, filter side): the stride-1
# layers of GCM and ResNet-20 (16, 32, 64 channels; GCM's layer 15, 5x5
# from 16 to 10 class maps) and of the CNN (x1.16: 18, 37, 74).
LAYERS = [(16, 16, 32, 3), (32, 32, 16, 3), (64, 64, 8, 3), (18, 18, 32, 3),
          (37, 37, 16, 3), (74, 74, 8, 3), (16, 32, 16, 3), (32, 16, 32, 3),
          (16, 10, 32, 5)]


@pytest.mark.parametrize('c,m,side,k', LAYERS)
def test_layer_shapes_match_the_direct_convolution(c, m, side, k,
                                                   monkeypatch):
    compare((2, c, side, side), (m, c, k, k), 'half', monkeypatch,
            seed=c + m)


# Odd shapes, with the thresholds lowered so that Winograd takes them, in
# 2x2 tiles or in 4x4 ones (FC_WINO4_MIN_SIZE: outputs at least that wide
# take 4x4 tiles, 0 never): 5x7 and 1-row images (tiles partly outside),
# 1 and 3 channels, batch 1, every border mode and uneven paddings.
FORCE = {'FC_WINO_MIN_CHANNELS': 1, 'FC_WINO5_MIN_CHANNELS': 1,
         'FC_WINO_MIN_SIZE': 1}
TILES = {2: dict(FORCE, FC_WINO4_MIN_SIZE=0),
         4: dict(FORCE, FC_WINO4_MIN_SIZE=1)}
ODD = [
    ((1, 3, 5, 7), (4, 3, 3, 3), 'half'),
    ((2, 1, 7, 5), (1, 1, 3, 3), 'half'),
    ((1, 3, 1, 9), (5, 3, 3, 3), 'half'),
    ((3, 4, 6, 9), (3, 4, 3, 3), 'valid'),
    ((2, 3, 5, 6), (7, 3, 3, 3), 'full'),
    ((2, 3, 7, 8), (4, 3, 3, 3), ((0, 2), (1, 0))),
    ((1, 5, 11, 10), (17, 5, 3, 3), (2, 1)),
    ((2, 3, 7, 9), (4, 3, 5, 5), 'half'),
    ((1, 2, 6, 5), (3, 2, 5, 5), 'full'),
    ((2, 3, 9, 8), (5, 3, 5, 5), ((0, 4), (3, 1))),
]


@pytest.mark.parametrize('tile', [2, 4])
@pytest.mark.parametrize('ishape,kshape,border_mode', ODD)
def test_odd_shapes_match_the_direct_convolution(ishape, kshape, border_mode,
                                                 tile, monkeypatch):
    compare(ishape, kshape, border_mode, monkeypatch, TILES[tile],
            seed=sum(ishape))


# (vector width, tile): each width this machine does not build natively,
# each tile once (8 floats, AVX2's, run in every other test here)
@pytest.mark.parametrize('vl,tile', [(4, 4), (16, 2)])
def test_every_vector_width(vl, tile, monkeypatch):
    """The code of SSE, AVX2 and AVX-512 machines (4, 8, 16 floats a
    vector; GCC emulates the wider ones here), on a layer whose rows of
    tiles are longer than a vector and on one whose rows are shorter."""
    defines = dict(TILES[tile], FC_VL=vl)
    compare((2, 16, 64, 64), (16, 16, 3, 3), 'half', monkeypatch, defines)
    compare((3, 12, 6, 10), (13, 12, 3, 3), 'half', monkeypatch, defines)


def test_below_the_thresholds_the_direct_code_runs(monkeypatch):
    """Layer 1 (3 channels in) and small images stay direct: Winograd on
    and off give the same bits."""
    rng = np.random.RandomState(1)
    for ishape, kshape in (((2, 3, 32, 32), (16, 3, 3, 3)),
                           ((2, 16, 4, 4), (16, 16, 3, 3))):
        X = rng.uniform(-1, 1, ishape).astype('float32')
        W = rng.uniform(-1, 1, kshape).astype('float32')
        R = rng.uniform(-1, 1, (ishape[0], kshape[0]) + ishape[2:])
        R = R.astype('float32')
        outs = [conv_and_gradients(ishape, kshape, 'half', on, monkeypatch)(
            X, W, R) for on in (False, True)]
        for a, b in zip(*outs):
            assert np.array_equal(a, b)


def test_environment_switch_is_read_when_compiling(monkeypatch):
    monkeypatch.delenv('GCM_WINOGRAD', raising=False)
    assert fastconv.winograd_enabled()  # on unless asked otherwise
    for value, expected in (('0', False), (' 0 ', False), ('1', True),
                            ('', True)):
        monkeypatch.setenv('GCM_WINOGRAD', value)
        assert fastconv.winograd_enabled() is expected
