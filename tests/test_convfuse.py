"""The bias and ReLU of an inference graph inside the convolution
(gcm_lasagne.convfuse): the same bits as the convolution followed by
fastbn's BiasAdd, on the direct and the Winograd code, forward and
transposed; applied only where nothing else reads the convolution."""
import numpy as np
import pytest
import theano
import theano.tensor as T
from theano.tensor.nnet.abstract_conv import conv2d_grad_wrt_inputs

from gcm_lasagne import convfuse, fastbn, fastconv

FUSED = (convfuse.FastCorrMMBias, convfuse.FastCorrMM_gradInputsBias)
UNFUSED = theano.compile.get_default_mode().excluding('gcm_convfuse')


def kinds(fn):
    return [type(node.op) for node in fn.maker.fgraph.toposort()]


def data(rng, *shape):
    return rng.standard_normal(shape).astype('float32')


# (name, images (B, C, H, W), filters (M, C, k, k), stride, transposed)
CASES = [
    ('direct, 3 channels in', (3, 3, 12, 16), (16, 3, 3, 3), 1, False),
    ('direct, stride 2', (2, 16, 9, 8), (32, 16, 3, 3), 2, False),
    ('winograd 4x4 tiles', (2, 16, 16, 16), (16, 16, 3, 3), 1, False),
    ('winograd 2x2 tiles, batch 1', (1, 32, 8, 8), (32, 32, 3, 3), 1, False),
    ('winograd 5x5', (2, 16, 16, 16), (10, 16, 5, 5), 1, False),
    ('transposed, stride 2', (2, 64, 4, 5), (64, 32, 3, 3), 2, True),
    ('transposed, stride 1, winograd', (2, 16, 8, 8), (16, 16, 3, 3), 1,
     True),
    ('odd shape 5x7', (1, 12, 5, 7), (12, 12, 3, 3), 1, False),
]


def graph(x, w, b, stride, transposed, relu):
    k = w.get_value().shape[-1]
    if transposed:
        B, C, H, W = x.get_value().shape
        out_shape = (B, w.get_value().shape[1],
                     (H - 1) * stride + 1, (W - 1) * stride + 1)
        conved = conv2d_grad_wrt_inputs(
            x, w, out_shape, border_mode='half', subsample=(stride, stride),
            filter_flip=False)
    else:
        conved = T.nnet.conv2d(x, w, border_mode='half',
                               subsample=(stride, stride), filter_flip=False)
    y = fastbn.BiasAdd()(conved, b)
    return (fastbn.with_rectify(y) if relu else y), k


@pytest.mark.parametrize('relu', [True, False], ids=['relu', 'bias only'])
@pytest.mark.parametrize('case', CASES, ids=[c[0] for c in CASES])
def test_fused_equals_the_convolution_then_biasadd_bit_for_bit(case, relu):
    name, xshape, wshape, stride, transposed = case
    rng = np.random.default_rng(len(name))
    x = theano.shared(data(rng, *xshape))
    w = theano.shared(data(rng, *wshape) / np.sqrt(np.prod(wshape[1:])))
    channels = wshape[1] if transposed else wshape[0]
    b = theano.shared(data(rng, channels))
    out, _ = graph(x, w, b, stride, transposed, relu)
    fused = theano.function([], out)
    unfused = theano.function([], out, mode=UNFUSED)
    assert sum(k in FUSED for k in kinds(fused)) == 1
    assert fastbn.BiasAdd not in kinds(fused)
    assert not any(k in FUSED for k in kinds(unfused))
    assert fastbn.BiasAdd in kinds(unfused)
    got, want = fused(), unfused()
    assert got.shape == want.shape
    node, = [n for n in fused.maker.fgraph.toposort() if type(n.op) in FUSED]
    shape, = node.op.infer_shape(node, [v.shape for v in node.inputs])
    assert tuple(int(theano.function([], d)()) for d in shape) == got.shape
    np.testing.assert_array_equal(got, want)
    # the comparison means something: bias and ReLU both act
    assert (want == 0).mean() > 0.2 if relu else (want < 0).mean() > 0.2
    b.set_value(b.get_value() + 1)  # the bias is read at run time
    np.testing.assert_array_equal(fused(), unfused())


def test_a_convolution_read_elsewhere_is_left_alone():
    rng = np.random.default_rng(0)
    x = theano.shared(data(rng, 2, 16, 8, 8))
    w = theano.shared(data(rng, 16, 16, 3, 3))
    b = theano.shared(data(rng, 16))
    conved = T.nnet.conv2d(x, w, border_mode='half', filter_flip=False)
    fn = theano.function([], [fastbn.BiasAdd(relu=True)(conved, b),
                              conved.sum()])
    assert not any(k in FUSED for k in kinds(fn))
    y, total = fn()
    assert np.isclose(total, theano.function([], conved)().sum(), rtol=1e-5)


def test_the_python_fallback_equals_the_c_code():
    rng = np.random.default_rng(1)
    x, w, b = data(rng, 2, 16, 8, 8), data(rng, 16, 16, 3, 3), data(rng, 16)
    xs, ws, bs = T.ftensor4(), T.ftensor4(), T.fvector()
    out = convfuse.FastCorrMMBias('half', (1, 1), relu=True)(xs, ws, bs)
    c = theano.function([xs, ws, bs], out)(x, w, b)
    py = theano.function([xs, ws, bs], out, mode=theano.compile.Mode(
        linker='py', optimizer=None))(x, w, b)
    np.testing.assert_allclose(py, c, rtol=1e-5, atol=1e-5 * np.abs(c).max())
    assert (c == 0).any() and (c > 0).any()


def test_a_bias_of_the_wrong_length_is_refused():
    xs, ws, bs = T.ftensor4(), T.ftensor4(), T.fvector()
    fn = theano.function([xs, ws, bs], convfuse.FastCorrMMBias(
        'half', (1, 1), relu=True)(xs, ws, bs))
    rng = np.random.default_rng(2)
    with pytest.raises(ValueError, match='the bias needs 4 float32 values'):
        fn(data(rng, 1, 2, 5, 5), data(rng, 4, 2, 3, 3), data(rng, 3))


def test_the_fused_ops_are_made_only_by_the_optimizer():
    out = convfuse.FastCorrMMBias('half', (1, 1))(
        T.ftensor4(), T.ftensor4(), T.fvector())
    with pytest.raises(NotImplementedError, match='compile-time optimizer'):
        T.grad(out.sum(), out.owner.inputs[0])


def test_without_fastconv_nothing_is_registered():
    """GCM_FASTCONV=0 keeps both optimizers out (a fresh interpreter)."""
    import os
    import subprocess
    import sys
    code = ('import theano, gcm_lasagne; db = theano.compile.optdb.__db__; '
            'print("gcm_fastconv" in db, "gcm_convfuse" in db)')
    env = dict(os.environ, GCM_FASTCONV='0')
    out = subprocess.run([sys.executable, '-c', code], env=env,
                         capture_output=True, text=True, check=True).stdout
    assert out.split() == ['False', 'False']
    assert fastconv.OPTIMIZER_NAME != convfuse.OPTIMIZER_NAME
