"""The fastconv ops and optimizer: every supported CorrMM variant compiled
with the optimizer gives what Theano's own CorrMM ops give (the same graph
compiled with mode.excluding('gcm_fastconv')), and the compiled graphs hold
our ops and no CorrMM."""
import os
import subprocess
import sys

import numpy as np
import pytest

import gcm_lasagne  # noqa: F401  (configures Theano)
import lasagne
import theano
import theano.tensor as T
from theano.tensor.nnet import conv2d, conv2d_grad_wrt_inputs
from theano.tensor.nnet.corr import (CorrMM, CorrMM_gradInputs,
                                     CorrMM_gradWeights)

from gcm_lasagne import fastconv, models, train
from gcm_lasagne.fastconv import (FastCorrMM, FastCorrMM_gradInputs,
                                  FastCorrMM_gradWeights)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORR = (CorrMM, CorrMM_gradWeights, CorrMM_gradInputs)
FAST = (FastCorrMM, FastCorrMM_gradWeights, FastCorrMM_gradInputs)
fastconv.register()  # whatever GCM_FASTCONV says
FAST_MODE = theano.compile.get_default_mode().including('gcm_fastconv')
REF_MODE = theano.compile.get_default_mode().excluding('gcm_fastconv')
TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(autouse=True)
def direct_code(monkeypatch):
    """The direct code against CorrMM, element by element; Winograd, which
    rounds differently, is held against the direct code in
    test_winograd.py (within 1e-5 of the output's scale)."""
    monkeypatch.setenv('GCM_WINOGRAD', '0')


def op_types(fn):
    return [type(node.op) for node in fn.maker.fgraph.toposort()]


def count(fn, classes):
    return sum(1 for t in op_types(fn) if t in classes)


def uniform(rng, shape):
    return rng.uniform(-1, 1, shape).astype('float32')


# (image shape, filter shape, border_mode, subsample): batch 1-3, maps 5x5
# to 9x9, odd and even sizes, every border mode, strides 1, 2, 3 and mixed,
# a stride larger than the filter (input-gradient phases no tap reaches).
# The weight gradient has two code paths: vectorised over pixels for few
# output channels (up to 10 here), over channels for 16, 64 and 70; those
# cases also have several register tiles of channels and taps.
CONV_CASES = [
    ((3, 4, 7, 9), (5, 4, 3, 3), 'half', (1, 1)),
    ((2, 3, 8, 6), (4, 3, 5, 5), 'half', (1, 1)),
    ((2, 3, 6, 7), (3, 3, 2, 4), 'half', (1, 1)),
    ((3, 4, 9, 8), (6, 4, 3, 3), 'half', (2, 2)),
    ((2, 5, 8, 7), (7, 5, 3, 3), 'half', (2, 2)),
    ((2, 3, 7, 6), (4, 3, 3, 2), 'valid', (1, 1)),
    ((3, 2, 9, 7), (4, 2, 3, 3), 'valid', (2, 2)),
    ((2, 3, 6, 5), (4, 3, 1, 1), 'valid', (2, 2)),
    ((2, 3, 5, 6), (4, 3, 3, 2), 'full', (1, 1)),
    ((2, 3, 5, 6), (3, 3, 3, 3), 'full', (2, 2)),
    ((2, 3, 6, 7), (4, 3, 3, 3), (1, 2), (1, 1)),
    ((3, 2, 7, 9), (5, 2, 3, 5), (2, 0), (2, 2)),
    ((2, 3, 7, 8), (4, 3, 3, 4), ((0, 2), (1, 0)), (1, 1)),
    ((2, 3, 7, 8), (4, 3, 3, 3), 'half', (2, 1)),
    ((2, 3, 9, 8), (4, 3, 2, 2), 'half', (3, 3)),
    ((1, 3, 5, 5), (2, 3, 3, 3), 'half', (1, 1)),
    ((2, 20, 5, 6), (70, 20, 3, 3), 'half', (1, 1)),
    ((2, 8, 6, 7), (16, 8, 3, 3), 'half', (1, 1)),
    ((2, 6, 9, 8), (64, 6, 3, 3), 'half', (2, 2)),
    ((2, 16, 8, 8), (10, 16, 5, 5), 'half', (1, 1)),
]


def compile_pair(inputs, outputs):
    return (theano.function(inputs, outputs, mode=FAST_MODE),
            theano.function(inputs, outputs, mode=REF_MODE))


def check_pair(fast, ref, args, expected_fast):
    """fast holds exactly expected_fast of our ops and no CorrMM, ref holds
    as many CorrMM ops; both give the same numbers."""
    assert count(fast, CORR) == 0
    assert sorted(t.__name__ for t in op_types(fast) if t in FAST) == \
        sorted(t.__name__ for t in expected_fast)
    assert count(ref, CORR) == len(expected_fast)
    assert count(ref, FAST) == 0
    got, want = fast(*args), ref(*args)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, **TOL)
    return got


@pytest.mark.parametrize('ishape,kshape,border_mode,subsample', CONV_CASES)
def test_conv_and_gradients_match_corrmm(ishape, kshape, border_mode,
                                         subsample):
    rng = np.random.RandomState(sum(ishape) + sum(kshape))
    x, w = T.tensor4('x'), T.tensor4('w')
    y = conv2d(x, w, border_mode=border_mode, subsample=subsample,
               filter_flip=False)
    X, W = uniform(rng, ishape), uniform(rng, kshape)
    shape = theano.function([x, w], y.shape, mode=REF_MODE)(X, W)
    R = theano.shared(uniform(rng, tuple(shape)))
    cost = (y * R).sum()
    fast, ref = compile_pair([x, w], [y] + theano.grad(cost, [x, w]))
    out = check_pair(fast, ref, (X, W), FAST)
    assert np.abs(out[0]).max() > 0.1  # not a trivial all-zero comparison


# Transposed convolutions as Lasagne's TransposedConv2DLayer builds them: the
# forward pass is the input gradient, with a given (possibly larger) size.
DECONV_CASES = [
    ((2, 6, 4, 4), (6, 3, 3, 3), (2, 3, 8, 8), 'half', (2, 2)),
    ((3, 4, 5, 4), (4, 5, 3, 3), (3, 5, 9, 8), 'half', (2, 2)),
    ((2, 4, 3, 4), (4, 2, 3, 3), (2, 2, 8, 9), 'valid', (2, 2)),
    ((2, 4, 5, 5), (4, 2, 3, 3), (2, 2, 5, 5), 'half', (1, 1)),
]


@pytest.mark.parametrize('tshape,kshape,ishape,border_mode,subsample',
                         DECONV_CASES)
def test_transposed_conv_and_gradients_match_corrmm(tshape, kshape, ishape,
                                                    border_mode, subsample):
    rng = np.random.RandomState(sum(tshape))
    t, w = T.tensor4('t'), T.tensor4('w')
    y = conv2d_grad_wrt_inputs(t, w, ishape, border_mode=border_mode,
                               subsample=subsample, filter_flip=False)
    R = theano.shared(uniform(rng, ishape))
    cost = (y * R).sum()
    fast, ref = compile_pair([t, w], [y] + theano.grad(cost, [t, w]))
    T_, W = uniform(rng, tshape), uniform(rng, kshape)
    out = check_pair(fast, ref, (T_, W), FAST)
    assert out[0].shape == ishape


@pytest.mark.parametrize('case', [CONV_CASES[i] for i in (3, -4, -3)])
def test_8_float_vector_build(case):
    """The C code as an AVX2 machine compiles it (8-float vectors, 12-channel
    tiles) gives the same numbers too."""
    fastconv._C_DEFINES['FC_VL'] = 8
    try:
        test_conv_and_gradients_match_corrmm(*case)
    finally:
        del fastconv._C_DEFINES['FC_VL']


def test_our_ops_gradients_match_corrmm_gradients():
    """The grad methods, also of the gradient ops (second order), against
    CorrMM's, on graphs built from the ops directly."""
    rng = np.random.RandomState(5)
    x, w, dy = T.tensor4('x'), T.tensor4('w'), T.tensor4('dy')
    X, W = uniform(rng, (2, 3, 7, 6)), uniform(rng, (4, 3, 3, 3))
    DY = uniform(rng, (2, 4, 4, 3))
    weights = [theano.shared(uniform(rng, s)) for s in
               ((2, 4, 4, 3), (4, 3, 3, 3), (2, 3, 7, 6))]

    def graph(fwd, gw, gi):
        outs = [fwd('half', (2, 2))(x, w),
                gw('half', (2, 2))(x, dy, (3, 3)),
                gi('half', (2, 2))(w, dy, (7, 6))]
        cost = sum((o * r).sum() for o, r in zip(outs, weights))
        return theano.grad(cost, [x, w, dy])

    fast = theano.function([x, w, dy], graph(*FAST), mode=REF_MODE)
    ref = theano.function([x, w, dy], graph(*CORR), mode=REF_MODE)
    assert count(fast, CORR) == 0 and count(fast, FAST) >= 3
    for g, r in zip(fast(X, W, DY), ref(X, W, DY)):
        np.testing.assert_allclose(g, r, **TOL)


def test_infer_shape():
    """infer_shape, with and without the size inputs of the gradient ops,
    against the shapes the ops compute (numpy code, no compiling); and the
    shape of a compiled graph comes from it, without running the op."""
    rng = np.random.RandomState(6)
    x, w, dy = T.tensor4('x'), T.tensor4('w'), T.tensor4('dy')
    X, W = uniform(rng, (2, 3, 7, 6)), uniform(rng, (4, 3, 3, 2))
    for mode, sub in (('valid', (1, 1)), ('full', (1, 1)), ((2, 1), (1, 1)),
                      ('half', (2, 2)), ((1, 0), (2, 2))):
        fwd = FastCorrMM(mode, sub)
        DY = fastconv._np_forward(X, W, fwd.border_mode, sub)
        given = mode == 'half' or sub != (1, 1)
        nodes = [fwd.make_node(x, w),
                 FastCorrMM_gradWeights(mode, sub).make_node(
                     x, dy, (3, 2) if given else None),
                 FastCorrMM_gradInputs(mode, sub).make_node(
                     w, dy, (7, 6) if given else None)]
        shapes = [(X.shape, W.shape), (X.shape, DY.shape) + ((), ()),
                  (W.shape, DY.shape) + ((), ())]
        want = [DY.shape, W.shape, X.shape]
        for node, shp, expected in zip(nodes, shapes, want):
            got, = node.op.infer_shape(node, shp)
            got = tuple(int(T.get_scalar_constant_value(s)) for s in got)
            assert got == expected
            values = {'x': X, 'w': W, 'dy': DY}
            storage = [None]
            node.op.perform(node, [values[v.name] if v.name in values
                                   else v.data for v in node.inputs],
                            [storage])
            assert storage[0].shape == expected
    shape = theano.function(
        [x, w], FastCorrMM('half', (2, 2))(x, w).shape,
        mode=theano.compile.Mode(linker='py', optimizer='fast_run'))
    assert count(shape, FAST) == 0
    assert tuple(shape(X, W)) == (2, 4, 4, 4)


def test_python_perform_matches_c_code():
    rng = np.random.RandomState(7)
    x, w, dy = T.tensor4('x'), T.tensor4('w'), T.tensor4('dy')
    X, W = uniform(rng, (2, 3, 7, 6)), uniform(rng, (4, 3, 3, 3))
    DY = uniform(rng, (2, 4, 4, 3))
    outs = [FastCorrMM('half', (2, 2))(x, w),
            FastCorrMM_gradWeights('half', (2, 2))(x, dy, (3, 3)),
            FastCorrMM_gradInputs('half', (2, 2))(w, dy, (7, 6))]
    c = theano.function([x, w, dy], outs, mode=REF_MODE)
    py = theano.function([x, w, dy], outs,
                         mode=theano.compile.Mode(linker='py', optimizer=None))
    for a, b in zip(c(X, W, DY), py(X, W, DY)):
        np.testing.assert_allclose(a, b, **TOL)


def test_inconsistent_sizes_are_an_error():
    w, dy = T.tensor4('w'), T.tensor4('dy')
    f = theano.function([w, dy], FastCorrMM_gradInputs('half', (2, 2))(
        w, dy, (9, 9)), mode=REF_MODE)
    rng = np.random.RandomState(8)
    W = uniform(rng, (4, 3, 3, 3))
    assert f(W, uniform(rng, (2, 4, 5, 5))).shape == (2, 3, 9, 9)
    with pytest.raises(ValueError, match='inconsistency'):
        f(W, uniform(rng, (2, 4, 4, 4)))  # a 9x9 input gives 5x5, not 4x4


def test_unsupported_variants_stay_corrmm():
    x, w, v = T.tensor4('x'), T.tensor4('w'), T.tensor4('v')
    rng = np.random.RandomState(9)
    X, W, V = (uniform(rng, s) for s in ((2, 4, 7, 7), (3, 4, 3, 3),
                                          (4, 2, 3, 3)))
    dilated = conv2d(x, w, filter_dilation=(2, 2))
    grouped = conv2d(x, v, num_groups=2)
    fn = theano.function([x, w, v], [dilated, grouped], mode=FAST_MODE)
    assert count(fn, FAST) == 0 and count(fn, (CorrMM,)) == 2
    assert [o.shape for o in fn(X, W, V)] == [(2, 3, 3, 3), (2, 4, 5, 5)]
    x64, w64 = T.dtensor4('x'), T.dtensor4('w')
    fn = theano.function([x64, w64], conv2d(x64, w64), mode=FAST_MODE)
    assert count(fn, FAST) == 0 and count(fn, (CorrMM,)) == 1


def test_environment_variable_disables_the_optimizer():
    code = ('import gcm_lasagne.fastconv, theano; '
            'print("gcm_fastconv" in theano.compile.optdb.__db__)')
    results = []
    for value in ('0', '1'):
        env = dict(os.environ, GCM_FASTCONV=value)
        out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=env,
                             capture_output=True, text=True, check=True)
        results.append(out.stdout.strip().splitlines()[-1])
    assert results == ['False', 'True']


def test_default_mode_uses_our_ops_and_exclusion_turns_them_off():
    x, w = T.tensor4('x'), T.tensor4('w')
    y = conv2d(x, w, border_mode='half')
    assert count(theano.function([x, w], y), FAST) == 1
    assert count(theano.function([x, w], y, mode=REF_MODE), FAST) == 0


def test_small_gcm_training_step():
    """No CorrMM is left in GCM's training graph, and one step gives the
    loss and parameters of Theano's own convolutions."""
    net = models.build_model('gcm', 10, (3, 8, 8))
    cfg = train.default_config(model='gcm')
    params = lasagne.layers.get_all_params(net['prob'], trainable=True)
    start = [p.get_value() for p in params]
    rng = np.random.RandomState(10)
    X = rng.rand(4, 3, 8, 8).astype('float32')
    y = rng.randint(0, 10, 4).astype('int32')
    results = []
    for mode in (FAST_MODE, REF_MODE):
        for p, v in zip(params, start):
            p.set_value(v)
        original = theano.function

        def function(*args, **kwargs):
            kwargs['mode'] = mode
            return original(*args, **kwargs)

        theano.function = function
        try:
            fn, _, _ = train.compile_train(net, cfg)
        finally:
            theano.function = original
        loss, correct = fn(X, y)
        results.append((fn, float(loss), int(correct),
                        [p.get_value() for p in params]))
    (fast, loss_f, corr_f, p_f), (ref, loss_r, corr_r, p_r) = results
    assert count(fast, CORR) == 0
    assert {t for t in op_types(fast) if t in FAST} == set(FAST)
    assert count(ref, CORR) > 0 and count(ref, FAST) == 0
    assert np.isclose(loss_f, loss_r, rtol=1e-5)
    assert corr_f == corr_r
    changed = 0
    for a, b, s in zip(p_f, p_r, start):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
        changed += not np.allclose(a, s)
    assert changed > len(start) // 2  # the step did update the network


WEIGHT_GRADIENT = """
import sys, numpy as np
import gcm_lasagne, theano, theano.tensor as T
from theano.tensor.nnet import conv2d
x, w = T.tensor4('x'), T.tensor4('w')
rng = np.random.RandomState(0)
X = rng.uniform(-1, 1, (19, %d, 9, 9)).astype('float32')
W = rng.uniform(-1, 1, (%d, X.shape[1], 3, 3)).astype('float32')
cost = (conv2d(x, w, border_mode='half') ** 2).sum()
f = theano.function([x, w], theano.grad(cost, w))
np.save(sys.argv[1], f(X, W))
"""


@pytest.mark.parametrize('channels,winograd', [
    ((3, 5), '0'), ((16, 16), '0'),  # both direct code paths
    ((16, 16), '1')])  # and Winograd's
def test_weight_gradient_is_the_same_on_one_thread_and_on_two(
        tmp_path, channels, winograd):
    """Images are summed in fixed chunks, added in order: bit-identical
    whatever the number of threads or who took which chunk."""
    results = []
    for threads in ('1', '2'):
        path = str(tmp_path / ('dw%s.npy' % threads))
        env = dict(os.environ, OMP_NUM_THREADS=threads,
                   GCM_WINOGRAD=winograd)
        subprocess.run([sys.executable, '-c', WEIGHT_GRADIENT % channels,
                        path], cwd=ROOT, env=env, check=True)
        results.append(np.load(path))
    assert np.abs(results[0]).max() > 0
    assert np.array_equal(results[0], results[1])
