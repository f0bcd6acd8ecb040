"""The fused training-mode batch norm (gcm_lasagne.fastbn) against the plain
Theano expression of Lasagne's BatchNormLayer, values and gradients."""
import numpy as np
import pytest
import theano
import theano.tensor as T
from lasagne.layers import InputLayer, get_output

from gcm_lasagne import fastbn
from gcm_lasagne.compat import BatchNormLayer

EPS = 1e-4
P = ('x', 0, 'x', 'x')


def plain(x, gamma, beta):
    mean = x.mean((0, 2, 3))
    inv_std = T.inv(T.sqrt(x.var((0, 2, 3)) + EPS))
    y = (x - mean.dimshuffle(P)) * (gamma * inv_std).dimshuffle(P) \
        + beta.dimshuffle(P)
    return y, mean, inv_std


def fused(x, gamma, beta):
    return fastbn.batch_norm_train(x, gamma, beta, EPS)


def compiled(bn, weights, mode=None):
    """Outputs, the gradients of a cost on y alone, and of one that also
    uses the statistics (so the op's grad covers all three outputs)."""
    x, gamma, beta = T.ftensor4('x'), T.fvector('gamma'), T.fvector('beta')
    y, mean, inv_std = bn(x, gamma, beta)
    cost = (y * weights).sum() + 0.1 * (y ** 2).sum()
    cost_stats = cost + 0.3 * mean.sum() + 0.7 * (inv_std ** 2).sum()
    outputs = ([y, mean, inv_std] + T.grad(cost, [x, gamma, beta])
               + T.grad(cost_stats, [x, gamma, beta]))
    return theano.function([x, gamma, beta], outputs, mode=mode)


@pytest.mark.parametrize('shape', [(4, 3, 5, 7), (2, 5, 1, 1), (3, 2, 9, 4)])
def test_fused_equals_plain_expression(shape):
    rng = np.random.RandomState(sum(shape))
    # an offset mean, so that a one-pass variance would lose precision
    x = (rng.randn(*shape) * 3 + 10).astype('float32')
    gamma = (rng.rand(shape[1]) + .5).astype('float32')
    beta = rng.randn(shape[1]).astype('float32')
    weights = rng.randn(*shape).astype('float32')
    fast = compiled(fused, weights)
    ops = [type(n.op) for n in fast.maker.fgraph.toposort()]
    assert fastbn.BatchNormTrain in ops and fastbn.BatchNormTrainGrad in ops
    expected = compiled(plain, weights)(x, gamma, beta)
    for name, got, want in zip(
            ['y', 'mean', 'inv_std', 'dx', 'dgamma', 'dbeta',
             'dx (stats)', 'dgamma (stats)', 'dbeta (stats)'],
            fast(x, gamma, beta), expected):
        scale = max(1.0, np.abs(want).max())
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6 * scale,
                                   err_msg=name)


def test_python_implementation_equals_c():
    rng = np.random.RandomState(1)
    x = rng.randn(3, 4, 5, 6).astype('float32')
    gamma, beta = rng.rand(4).astype('float32'), rng.randn(4).astype('float32')
    weights = rng.randn(3, 4, 5, 6).astype('float32')
    c_code = compiled(fused, weights)(x, gamma, beta)
    python = compiled(fused, weights, theano.compile.Mode(linker='py'))(
        x, gamma, beta)
    for got, want in zip(python, c_code):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_bad_channels_is_an_error():
    x, gamma, beta = T.ftensor4(), T.fvector(), T.fvector()
    fn = theano.function([x, gamma, beta], fused(x, gamma, beta)[0])
    with pytest.raises(ValueError):
        fn(np.zeros((2, 3, 4, 4), 'float32'), np.ones(2, 'float32'),
           np.zeros(2, 'float32'))


def test_layer_trains_through_the_fused_op_and_moves_averages():
    rng = np.random.RandomState(2)
    x = T.ftensor4('x')
    layer = BatchNormLayer(InputLayer((None, 3, 4, 4), x))
    fn = theano.function([x], get_output(layer))
    ops = [type(n.op) for n in fn.maker.fgraph.toposort()]
    assert fastbn.BatchNormTrain in ops
    data = rng.normal(1, 2, (5, 3, 4, 4)).astype('float32')
    fn(data)
    fn(data)
    # two steps of alpha = 0.1 from mean 0, inv_std 1
    mean = data.mean((0, 2, 3))
    inv_std = 1 / np.sqrt(data.var((0, 2, 3)) + EPS)
    np.testing.assert_allclose(layer.mean.get_value(), 0.19 * mean,
                               rtol=1e-5)
    np.testing.assert_allclose(layer.inv_std.get_value(),
                               0.81 + 0.19 * inv_std, rtol=1e-5)
    # the deterministic graph neither uses the op nor moves the averages
    test = theano.function([x], get_output(layer, deterministic=True))
    assert fastbn.BatchNormTrain not in [
        type(n.op) for n in test.maker.fgraph.toposort()]
    before = layer.mean.get_value().copy()
    test(data)
    assert np.array_equal(layer.mean.get_value(), before)
