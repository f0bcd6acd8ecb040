"""The fused batch-norm ops (gcm_lasagne.fastbn) against the plain Theano
expression of Lasagne's BatchNormLayer: values and gradients, with and
without the ReLU, and the layers that use them."""
import numpy as np
import pytest
import theano
import theano.tensor as T
from lasagne import nonlinearities
from lasagne.layers import InputLayer, get_output

from gcm_lasagne import fastbn
from gcm_lasagne.compat import BatchNormLayer, batch_norm

EPS = 1e-4
P = ('x', 0, 'x', 'x')


def plain_train(x, gamma, beta, relu):
    mean = x.mean((0, 2, 3))
    inv_std = T.inv(T.sqrt(x.var((0, 2, 3)) + EPS))
    return plain_infer(x, mean, inv_std, gamma, beta, relu), mean, inv_std


def plain_infer(x, mean, inv_std, gamma, beta, relu):
    y = (x - mean.dimshuffle(P)) * (gamma * inv_std).dimshuffle(P) \
        + beta.dimshuffle(P)
    return T.nnet.relu(y) if relu else y


def fused_train(x, gamma, beta, relu):
    return fastbn.BatchNormTrain(EPS, relu)(x, gamma, beta)


def fused_infer(x, mean, inv_std, gamma, beta, relu):
    return fastbn.BatchNormInfer(relu)(x, mean, inv_std, gamma, beta)


def compiled_train(bn, relu, weights, mode=None):
    """Outputs, the gradients of a cost on y alone, and of one that also
    uses the statistics (so the op's grad covers all three outputs)."""
    x, gamma, beta = T.ftensor4('x'), T.fvector('gamma'), T.fvector('beta')
    y, mean, inv_std = bn(x, gamma, beta, relu)
    cost = (y * weights).sum() + 0.1 * (y ** 2).sum()
    cost_stats = cost + 0.3 * mean.sum() + 0.7 * (inv_std ** 2).sum()
    outputs = ([y, mean, inv_std] + T.grad(cost, [x, gamma, beta])
               + T.grad(cost_stats, [x, gamma, beta]))
    return theano.function([x, gamma, beta], outputs, mode=mode)


def compiled_infer(bn, relu, weights, mode=None):
    x = T.ftensor4('x')
    vectors = [T.fvector(n) for n in ('mean', 'inv_std', 'gamma', 'beta')]
    y = bn(x, *vectors, relu=relu)
    cost = (y * weights).sum()
    return theano.function([x] + vectors, [y] + T.grad(cost, [x] + vectors),
                           mode=mode)


def data(shape, seed):
    rng = np.random.RandomState(seed)
    # an offset mean, so that a one-pass variance would lose precision
    x = (rng.randn(*shape) * 3 + 10).astype('float32')
    channels = shape[1]
    vectors = [(rng.randn(channels) + 10).astype('float32'),  # mean
               (rng.rand(channels) / 3 + .2).astype('float32'),  # inv_std
               (rng.rand(channels) + .5).astype('float32'),  # gamma
               rng.randn(channels).astype('float32')]  # beta
    return x, vectors, rng.randn(*shape).astype('float32')


def assert_all_close(got, want, names):
    for name, g, w in zip(names, got, want):
        scale = max(1.0, np.abs(w).max())
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-6 * scale,
                                   err_msg=name)


def op_types(fn):
    return [n.op for n in fn.maker.fgraph.toposort()
            if isinstance(n.op, fastbn._BatchNormOp)]


TRAIN_NAMES = ['y', 'mean', 'inv_std', 'dx', 'dgamma', 'dbeta',
               'dx (stats)', 'dgamma (stats)', 'dbeta (stats)']


@pytest.mark.parametrize('relu', [False, True])
@pytest.mark.parametrize('shape', [(4, 3, 5, 7), (2, 5, 1, 1), (3, 2, 9, 4)])
def test_training_op_equals_plain_expression(shape, relu):
    x, (_, _, gamma, beta), weights = data(shape, sum(shape))
    fast = compiled_train(fused_train, relu, weights)
    assert {type(op) for op in op_types(fast)} == {
        fastbn.BatchNormTrain, fastbn.BatchNormTrainGrad}
    expected = compiled_train(plain_train, relu, weights)(x, gamma, beta)
    assert_all_close(fast(x, gamma, beta), expected, TRAIN_NAMES)


@pytest.mark.parametrize('relu', [False, True])
def test_inference_op_equals_plain_expression(relu):
    x, vectors, weights = data((3, 4, 5, 6), 3)
    fast = compiled_infer(fused_infer, relu, weights)
    assert fastbn.BatchNormInfer in map(type, op_types(fast))
    expected = compiled_infer(plain_infer, relu, weights)(x, *vectors)
    assert_all_close(fast(x, *vectors), expected,
                     ['y', 'dx', 'dmean', 'dinv_std', 'dgamma', 'dbeta'])


@pytest.mark.parametrize('relu', [False, True])
@pytest.mark.parametrize('shape', [(3, 4, 5, 6), (2, 5, 1, 1)])
def test_bias_op_equals_plain_expression(shape, relu):
    """BiasAdd, a BN folded into its convolution (inference.py): values,
    gradients, the ReLU taken in by with_rectify, and its Python code."""
    x, (_, _, _, bias), weights = data(shape, 4)
    xv, bv = T.ftensor4('x'), T.fvector('bias')

    def compiled(y, mode=None):
        cost = (y * weights).sum()
        return theano.function([xv, bv], [y] + T.grad(cost, [xv, bv]),
                               mode=mode)
    fused = fastbn.bias_add(xv, bv)
    if relu:
        fused = fastbn.with_rectify(fused)
    plain = xv + bv.dimshuffle(P)
    plain = T.nnet.relu(plain) if relu else plain
    fast = compiled(fused)
    assert [(type(op), op.relu) for op in op_types(fast)] == [
        (fastbn.BiasAdd, relu)]
    expected = compiled(plain)(x, bias)
    names = ['y', 'dx', 'dbias']
    assert_all_close(fast(x, bias), expected, names)
    python = theano.compile.Mode(linker='py')
    assert_all_close(compiled(fused, python)(x, bias), expected, names)


def test_python_implementations_equal_c():
    x, vectors, weights = data((3, 4, 5, 6), 1)
    python = theano.compile.Mode(linker='py')
    for relu in (False, True):
        train = [compiled_train(fused_train, relu, weights, mode)(
            x, *vectors[2:]) for mode in (python, None)]
        assert_all_close(*train, TRAIN_NAMES)
        infer = [compiled_infer(fused_infer, relu, weights, mode)(x, *vectors)
                 for mode in (python, None)]
        assert_all_close(*infer, ['y', 'dx'])


def test_mismatched_channels_is_an_error():
    x, gamma, beta = T.ftensor4(), T.fvector(), T.fvector()
    fn = theano.function([x, gamma, beta],
                         fused_train(x, gamma, beta, False)[0])
    with pytest.raises(ValueError):
        fn(np.zeros((2, 3, 4, 4), 'float32'), np.ones(2, 'float32'),
           np.zeros(2, 'float32'))


def moments(values):
    return values.mean((0, 2, 3)), 1 / np.sqrt(values.var((0, 2, 3)) + EPS)


@pytest.mark.parametrize('nonlinearity', [nonlinearities.rectify,
                                          nonlinearities.identity])
def test_batch_norm_layers_use_the_ops_and_move_averages(nonlinearity):
    rng = np.random.RandomState(2)
    x = T.ftensor4('x')
    layer = InputLayer((None, 3, 4, 4), x)
    layer.nonlinearity = nonlinearity  # what batch_norm() takes over
    out = batch_norm(layer)
    bn = out.input_layer if out is not layer else out
    assert isinstance(bn, BatchNormLayer)
    relu = nonlinearity is nonlinearities.rectify
    train = theano.function([x], get_output(out))
    test = theano.function([x], get_output(out, deterministic=True))
    # one op each, the ReLU inside it, and nothing else elementwise-heavy
    assert [(type(op), op.relu) for op in op_types(train)] == [
        (fastbn.BatchNormTrain, relu)]
    assert [(type(op), op.relu) for op in op_types(test)] == [
        (fastbn.BatchNormInfer, relu)]

    values = rng.normal(1, 2, (5, 3, 4, 4)).astype('float32')
    mean, inv_std = moments(values)
    expected = (values - mean[:, None, None]) * inv_std[:, None, None]
    np.testing.assert_allclose(
        train(values), np.maximum(expected, 0) if relu else expected,
        rtol=1e-4, atol=1e-5)
    train(values)
    # two steps of alpha = 0.1 from mean 0, inv_std 1
    np.testing.assert_allclose(bn.mean.get_value(), 0.19 * mean, rtol=1e-5)
    np.testing.assert_allclose(bn.inv_std.get_value(),
                               0.81 + 0.19 * inv_std, rtol=1e-5)
    # the deterministic pass uses the running averages and leaves them
    before = bn.mean.get_value().copy()
    running = ((values - before[:, None, None])
               * bn.inv_std.get_value()[:, None, None])
    np.testing.assert_allclose(
        test(values), np.maximum(running, 0) if relu else running,
        rtol=1e-5, atol=1e-5)
    assert np.array_equal(bn.mean.get_value(), before)
