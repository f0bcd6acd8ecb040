"""Issue 2: the networks of Table 1, held against the paper's tables."""
import numpy as np
import pytest

import gcm_lasagne  # noqa: F401  (configures Theano)
import lasagne
import theano
import theano.tensor as T
from lasagne.layers import count_params, get_output, get_output_shape
from lasagne.nonlinearities import identity, rectify

from gcm_lasagne import paper
from gcm_lasagne.compat import BatchNormLayer, TransposedConv2DLayer
from gcm_lasagne.models import build_cnn, build_gcm, build_model, cnn_rows

floatX = theano.config.floatX


def trainable(net):
    return count_params(net['prob'], trainable=True)


@pytest.mark.parametrize('model', ['gcm', 'gcm-clip', 'cnn'])
def test_parameter_counts_match_table3(model):
    net = build_model(model)
    assert trainable(net) == paper.PARAMS[model]
    assert '%dK' % round(trainable(net) / 1000.) == paper.TABLE3[model]['params']


def test_basic_decoder_has_a_full_decoder_per_class():
    shared, basic = build_gcm(), build_gcm(decoder='basic')
    encoder = 122544 + 704           # SPEC.md
    decoder = 34560 + 192            # layers 11-14
    class_layer = 5 * 5 * 16 + 1     # layer 15, one class
    assert trainable(shared) == encoder + decoder + 10 * class_layer
    assert trainable(basic) == encoder + 10 * (decoder + class_layer)
    assert trainable(build_gcm(3, decoder='basic')) == (
        encoder + 3 * (decoder + class_layer))


def _check_block(block, row, input_channels):
    """A Table 1 row: (de)conv without bias -> BN -> ReLU."""
    number, kind, filter_size, channels, stride = row
    assert block.nonlinearity is rectify
    bn = block.input_layer
    assert isinstance(bn, BatchNormLayer)
    conv = bn.input_layer
    assert conv.b is None and conv.nonlinearity is identity
    assert conv.filter_size == (filter_size, filter_size)
    assert conv.stride == (stride, stride)
    assert conv.num_filters == channels
    if kind == 'deconv':
        assert isinstance(conv, TransposedConv2DLayer)
        assert conv.W.get_value().shape == (input_channels, channels,
                                            filter_size, filter_size)
    else:
        assert conv.pad == 'same'
        assert conv.W.get_value().shape == (channels, input_channels,
                                            filter_size, filter_size)
    assert bn.beta.get_value().shape == (channels,)
    assert bn.gamma.get_value().shape == (channels,)


@pytest.mark.parametrize('clip', [False, True])
def test_gcm_layers_equal_table1(clip):
    net = build_gcm(clip=clip)
    channels, size = 3, 32
    for row in paper.ENCODER + paper.DECODER:
        number, kind, _, out_channels, stride = row
        block = net['%s%d' % (kind, number)]
        _check_block(block, row, channels)
        size = size * stride if kind == 'deconv' else size // stride
        assert get_output_shape(block) == (None, out_channels, size, size)
        channels = out_channels
    assert size == 32
    last = net['conv15']
    assert last.filter_size == (5, 5) and last.stride == (1, 1)
    assert last.W.get_value().shape == (10, 16, 5, 5)
    assert last.b.get_value().shape == (10,)
    assert last.nonlinearity is (rectify if clip else identity)
    assert net['class_weight_map'] is last


def test_cnn_layers_equal_sec44():
    net = build_cnn()
    assert [r[3] for r in cnn_rows()] == [16, 18, 18, 18, 37, 37, 37,
                                          74, 74, 74]
    channels = 3
    for row in cnn_rows():
        _check_block(net['conv%d' % row[0]], row, channels)
        channels = row[3]
    assert get_output_shape(net['pool']) == (None, 74)
    assert net['class_scores'].W.get_value().shape == (74, 10)


def test_any_class_count_and_input_size():
    net = build_gcm(num_classes=4, input_shape=(1, 48, 24))
    assert get_output_shape(net['class_contribution_map']) == (None, 4, 1,
                                                               48, 24)
    assert get_output_shape(build_cnn(7, (3, 16, 16))['prob']) == (None, 7)
    with pytest.raises(ValueError, match='divisible by 4'):
        build_gcm(input_shape=(3, 30, 32))
    with pytest.raises(ValueError, match='unknown model'):
        build_model('resnet')


@pytest.fixture(scope='module')
def gcm_outputs():
    """One forward pass of an untrained GCM (deterministic and training
    mode) on a random batch, compiled once for the tests below."""
    rng = np.random.RandomState(0)
    x = T.tensor4('x')
    net = build_gcm(num_classes=10, input_shape=(3, 32, 32), input_var=x)
    # move BN away from its identity initialisation
    for layer in lasagne.layers.get_all_layers(net['prob']):
        if isinstance(layer, BatchNormLayer):
            n = layer.mean.get_value().shape
            layer.mean.set_value(rng.normal(0, .1, n).astype(floatX))
            layer.inv_std.set_value(rng.uniform(.5, 2, n).astype(floatX))
    names = ['class_weight_map', 'class_contribution_map', 'class_scores',
             'prob']
    f = theano.function([x], get_output([net[k] for k in names],
                                        deterministic=True))
    image = rng.uniform(0, 1, (5, 3, 32, 32)).astype(floatX)
    return image, dict(zip(names, f(image)))


def test_output_shapes(gcm_outputs):
    image, out = gcm_outputs
    assert out['class_weight_map'].shape == (5, 10, 32, 32)
    assert out['class_contribution_map'].shape == (5, 10, 3, 32, 32)
    assert out['class_scores'].shape == (5, 10)
    assert out['prob'].shape == (5, 10)


def test_ccm_is_tiled_cwm_times_image(gcm_outputs):
    image, out = gcm_outputs
    tiled = np.repeat(out['class_weight_map'][:, :, None], 3, axis=2)
    assert np.array_equal(out['class_contribution_map'],
                          tiled * image[:, None])


def test_score_is_mean_of_ccm_and_linear_in_the_image(gcm_outputs):
    image, out = gcm_outputs
    ccm, scores = out['class_contribution_map'], out['class_scores']
    np.testing.assert_allclose(scores, ccm.mean(axis=(2, 3, 4)), rtol=1e-5,
                               atol=1e-7)
    # Sec. 3.4: V_j = <W_j, I> / (R*C*D) with W_j = Tile(CWM_j)
    W = np.repeat(out['class_weight_map'][:, :, None], 3, axis=2)
    inner = np.einsum('bjdrc,bdrc->bj', W.astype(np.float64), image)
    np.testing.assert_allclose(scores, inner / (32 * 32 * 3), rtol=1e-4,
                               atol=1e-6)
    assert np.abs(scores).max() > 0  # not a trivially zero network
    e = np.exp(scores - scores.max(axis=1, keepdims=True))
    np.testing.assert_allclose(out['prob'], e / e.sum(1, keepdims=True),
                               rtol=1e-5)
    assert np.array_equal(out['prob'].argmax(1), scores.argmax(1))


def test_clipped_cwm_is_non_negative():
    x = T.tensor4('x')
    net = build_gcm(num_classes=3, input_shape=(3, 16, 16), clip=True,
                    input_var=x)
    cwm = theano.function([x], get_output(net['class_weight_map'],
                                          deterministic=True))
    image = np.random.RandomState(1).uniform(0, 1, (4, 3, 16, 16))
    maps = cwm(image.astype(floatX))
    assert maps.min() >= 0 and maps.max() > 0


@pytest.mark.parametrize('model', ['gcm', 'cnn'])
def test_sgd_steps_lower_the_loss_and_reach_every_parameter(model):
    rng = np.random.RandomState(2)
    x, y = T.tensor4('x'), T.ivector('y')
    net = build_model(model, num_classes=3, input_shape=(3, 8, 8),
                      input_var=x)
    prob = get_output(net['prob'])
    loss = lasagne.objectives.categorical_crossentropy(prob, y).mean()
    params = lasagne.layers.get_all_params(net['prob'], trainable=True)
    grads = T.grad(loss, params)
    step = theano.function(
        [x, y], [loss] + grads,
        updates=lasagne.updates.momentum(grads, params, 0.05, 0.9))
    image = rng.uniform(0, 1, (12, 3, 8, 8)).astype(floatX)
    labels = rng.randint(0, 3, 12).astype('int32')
    losses = []
    for i in range(15):
        out = step(image, labels)
        losses.append(float(out[0]))
        if i == 0:
            for p, g in zip(params, out[1:]):
                assert np.abs(g).max() > 0, 'no gradient reaches %s' % p
    assert losses[-1] < 0.5 * losses[0]
