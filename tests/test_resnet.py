"""ResNet-20, the control with a published result, and He et al.'s recipe:
the network, the option-A shortcut, the recipe option, the weight-decay
conversion, and a two-epoch run that resumes bit for bit and exports."""
import json
import os

import lasagne
import numpy as np
import pytest
import theano
import theano.tensor as T
from lasagne.layers import DenseLayer, InputLayer, get_output
from lasagne.nonlinearities import softmax

from gcm_lasagne import api, checkpoint, cli, resnet, train
from gcm_lasagne.models import build_model
from test_train import TINY, folder  # noqa: F401 (the fixture)


def resnet20_params(classes=10):
    """Counted from He et al.'s layer list, not from Lasagne: each 3x3
    convolution has no bias (batch norm's beta replaces it) and is followed
    by batch norm (gamma and beta per channel); option-A shortcuts have
    none; the dense layer has weights and a bias."""
    convs = [(3, resnet.FIRST_CHANNELS)]
    previous = resnet.FIRST_CHANNELS
    for channels, blocks, _ in resnet.STAGES:
        for _ in range(blocks):
            convs += [(previous, channels), (channels, channels)]
            previous = channels
    assert len(convs) + 1 == 20  # 6n + 2 weighted layers, n = 3
    return (sum(9 * c_in * c_out + 2 * c_out for c_in, c_out in convs)
            + previous * classes + classes)


def test_resnet20_has_he_et_al_s_parameter_count_and_shapes():
    assert resnet20_params() == 269722
    net = build_model('resnet20')
    assert lasagne.layers.count_params(net['prob'], trainable=True) == 269722
    assert net['pool'].input_layer.output_shape == (None, 64, 8, 8)
    assert net['prob'].output_shape == (None, 10)
    shortcuts = [l for l in lasagne.layers.get_all_layers(net['prob'])
                 if isinstance(l, resnet.ShortcutA)]
    assert [l.name for l in shortcuts] == ['stage2_block1_shortcut',
                                           'stage3_block1_shortcut']
    assert all(not l.get_params() for l in shortcuts)
    x = T.tensor4('x')
    prob = theano.function([x], get_output(build_model(
        'resnet20', 7, (3, 12, 16), input_var=x)['prob'],
        deterministic=True))(np.random.RandomState(0).uniform(
            size=(2, 3, 12, 16)).astype('float32'))
    assert prob.shape == (2, 7)
    np.testing.assert_allclose(prob.sum(axis=1), 1, rtol=1e-5)


def test_option_a_shortcut_subsamples_and_pads_zero_channels():
    x = np.arange(2 * 2 * 5 * 4, dtype='float32').reshape(2, 2, 5, 4)
    layer = resnet.ShortcutA(InputLayer((None, 2, 5, 4)), 5, 2)
    assert layer.output_shape == (None, 5, 3, 2)
    v = T.tensor4('v')
    out = theano.function([v], layer.get_output_for(v))(x)
    assert out.shape == (2, 5, 3, 2)
    np.testing.assert_array_equal(out[:, :2], x[:, :, ::2, ::2])
    assert not out[:, 2:].any()
    same = resnet.ShortcutA(InputLayer((None, 2, 5, 4)), 2, 1)
    np.testing.assert_array_equal(
        theano.function([v], same.get_output_for(v))(x), x)


def test_weights_are_he_normal_and_the_input_is_centred():
    lasagne.random.set_rng(np.random.RandomState(0))
    net = build_model('resnet20')
    layers = {l.name: l for l in lasagne.layers.get_all_layers(net['prob'])}
    w = layers['stage3_block2_conv2'].W.get_value()  # fan-in 64 x 3 x 3
    assert w.shape == (64, 64, 3, 3)
    assert abs(w.mean()) < 0.002
    assert w.std() == pytest.approx(np.sqrt(2.0 / 576), rel=0.02)
    assert net['centre'].pixel_mean.get_value().shape == (3, 32, 32)


def test_he2016_recipe_option_and_explicit_options_win():
    def config(*args):
        return cli.recipe(cli.build_parser().parse_args(['train'] + list(args)))
    he = config('--recipe', 'he2016')
    for key, value in resnet.HE2016.items():
        assert he[key] == (list(value) if key == 'lr_steps' else value), key
    assert he['recipe'] == 'he2016'
    assert (he['epochs'], he['lr_steps'], he['weight_decay']) == \
        (164, [82, 123], 5e-5)
    mixed = config('--recipe', 'he2016', '--epochs', '3', '--weight-decay',
                   '0', '--no-flip', '--lr-steps')
    assert (mixed['epochs'], mixed['weight_decay'], mixed['flip'],
            mixed['lr_steps']) == (3, 0, False, [])
    assert mixed['momentum'] == 0.9 and mixed['recipe'] == 'he2016'
    table2 = config()
    assert (table2['recipe'], table2['epochs'], table2['weight_decay']) == \
        ('table2', 180, 0.0)
    # a recipe's own steps are kept by a shorter run, others must fit in it
    train.check_config(train.default_config(recipe='he2016', epochs=2))
    with pytest.raises(train.TrainingError, match='lr-steps'):
        train.check_config(train.default_config(recipe='he2016', epochs=2,
                                                lr_steps=[100]))


def test_weight_decay_5e_5_is_he_et_al_s_1e_4_added_to_the_gradient():
    """One SGD step of compile_train by hand: He et al. update
    w -= lr (g + 1e-4 w) for the weights, and the bias, which Lasagne does
    not tag regularizable, by its gradient alone."""
    rng = np.random.RandomState(1)
    X = rng.uniform(size=(4, 3)).astype('float32')
    y = np.array([0, 2, 1, 2], dtype='int32')
    x = T.matrix('x')
    layer = DenseLayer(InputLayer((None, 3), x), 3, nonlinearity=softmax,
                       b=lasagne.init.Uniform(1))
    net = {'input': layer.input_layer, 'prob': layer}
    W0, b0 = layer.W.get_value(), layer.b.get_value()
    config = train.default_config(recipe='he2016', learning_rate=0.5)
    step = train.compile_train(net, config)[0]
    step(X, y)
    z = X.astype(np.float64) @ W0 + b0
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    dz = (p - np.eye(3)[y]) / len(y)  # d mean cross-entropy / d logits
    np.testing.assert_allclose(layer.W.get_value(),
                               W0 - 0.5 * (X.T @ dz + 1e-4 * W0), atol=1e-6)
    np.testing.assert_allclose(layer.b.get_value(),
                               b0 - 0.5 * dz.sum(axis=0), atol=1e-6)
    # and it is not nothing: without decay the weights end elsewhere
    assert np.abs(0.5 * 1e-4 * W0).max() > 1e-6


def test_two_epochs_of_resnet20_resume_bit_for_bit_and_export(folder,
                                                              tmp_path):
    he = ['--model', 'resnet20', '--recipe', 'he2016', '--data', folder]
    tiny = TINY[2:4] + TINY[-2:]  # batch 8, pad 1; He's rates and steps
    straight, split = str(tmp_path / 'straight'), str(tmp_path / 'split')
    assert cli.main(['train', '--out', straight, '--epochs', '2']
                    + he + tiny) == 0
    assert cli.main(['train', '--out', split, '--epochs', '1'] + he + tiny) == 0
    assert cli.main(['train', '--out', split, '--resume', '--epochs', '2']
                    + he) == 0
    _, a, _ = checkpoint.read(os.path.join(straight, 'model.npz'))
    _, b, _ = checkpoint.read(os.path.join(split, 'model.npz'))
    assert len(a) == len(b) > 0
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    with open(os.path.join(split, 'config.json')) as f:
        config = json.load(f)
    assert (config['model'], config['recipe'], config['weight_decay'],
            config['lr_steps'], config['epochs']) == \
        ('resnet20', 'he2016', 5e-5, [82, 123], 2)
    # a resume without --epochs keeps the run's length, not the recipe's 164
    assert cli.main(['train', '--out', split, '--resume'] + he) == 0
    with open(os.path.join(split, 'config.json')) as f:
        assert json.load(f)['epochs'] == 2

    shared = str(tmp_path / 'shared')
    assert cli.main(['export', straight, shared]) == 0
    model = api.load_model(os.path.join(shared, 'model.npz'))
    assert model.kind == 'resnet20'
    images = np.zeros((2,) + tuple(model.input_shape), dtype=np.uint8)
    label, scores, prob = model.predict(images)
    assert scores.shape == (2, 3)
    np.testing.assert_allclose(prob.sum(axis=1), 1, rtol=1e-5)
