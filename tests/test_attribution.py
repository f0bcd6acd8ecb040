"""Attribution maps (gcm_lasagne.attribution) on cases with known answers:
a linear model, the shipped GCM's completeness identity, CAM against
Grad-CAM on an untrained CNN baseline. Each model's functions compile once
per module (module-scoped fixtures)."""
import numpy as np
import pytest

import gcm_lasagne  # noqa: F401  (configures Theano)
import lasagne
from lasagne.layers import DenseLayer, InputLayer, NonlinearityLayer
from lasagne.nonlinearities import identity, softmax

from gcm_lasagne import attribution as attr
from gcm_lasagne import checkpoint, shipped
from gcm_lasagne.images import read_images
from gcm_lasagne.models import build_cnn

def linear_net(shape=(3, 4, 4), seed=0):
    """Class 0's score is w . x + 0.3, class 1's is 0: the true attribution
    of class 0 to a pixel is sum over channels of w x, and the softmax
    probability of class 0 rises and falls with its score alone."""
    net = {'input': InputLayer((None,) + shape, name='input')}
    w = np.random.RandomState(seed).normal(size=(int(np.prod(shape)), 2))
    w[:, 1] = 0
    net['class_scores'] = DenseLayer(
        net['input'], 2, W=w.astype(np.float32),
        b=np.array([0.3, 0], np.float32), nonlinearity=identity,
        name='class_scores')
    net['prob'] = NonlinearityLayer(net['class_scores'], softmax, name='prob')
    return net, w[:, 0].reshape(shape)


@pytest.fixture(scope='module')
def linear():
    net, w = linear_net()
    X = np.random.RandomState(1).uniform(size=(5, 3, 4, 4)).astype(np.float32)
    return attr.Attribution(net, ig_steps=3, batch_size=2), w, X


@pytest.fixture(scope='module')
def gcm():
    net, meta, _ = checkpoint.load(shipped.model_path())
    X = read_images(shipped.sample_paths()[::3], meta['input_shape'])
    return attr.Attribution(net, name='the shipped GCM'), X


@pytest.fixture(scope='module')
def cnn():
    lasagne.random.set_rng(np.random.RandomState(3))
    net = build_cnn(num_classes=3, input_shape=(3, 8, 8))
    X = np.random.RandomState(2).uniform(size=(4, 3, 8, 8)).astype(np.float32)
    return attr.Attribution(net, name='the CNN'), X


def test_methods_that_apply(linear, gcm, cnn):
    assert linear[0].methods == attr.ANY_METHODS
    assert gcm[0].methods == attr.GCM_METHODS + attr.ANY_METHODS
    assert cnn[0].methods == attr.ANY_METHODS + attr.CNN_METHODS


def test_gradient_x_input_and_ig_are_exact_on_a_linear_model(linear):
    a, w, X = linear
    targets = np.zeros(len(X), np.int32)
    truth = (w[None] * X).sum(axis=1)
    np.testing.assert_allclose(a.maps('gradient-x-input', X, targets), truth,
                               rtol=1e-5, atol=1e-6)
    ig, error = a.integrated_gradients(X, targets)
    np.testing.assert_allclose(ig, truth, rtol=1e-5, atol=1e-6)
    # completeness: the bias cancels in score(X) - score(black)
    np.testing.assert_allclose(error, 0, atol=1e-5)
    np.testing.assert_allclose(a.maps('gradient', X, targets),
                               np.broadcast_to(np.abs(w).max(axis=0),
                                               truth.shape), rtol=1e-6)
    # class 1's score does not depend on the image at all
    assert not a.maps('gradient-x-input', X, np.ones(5, np.int32)).any()


def test_random_map_depends_on_the_image_and_seed_only(linear):
    a, _, X = linear
    t = np.zeros(len(X), np.int32)
    once = a.maps('random', X, t)
    assert once.shape == (5, 4, 4) and 0 <= once.min() and once.max() < 1
    np.testing.assert_array_equal(a.maps('random', X[2:], t[2:]), once[2:])
    other = attr.Attribution(linear_net(seed=5)[0])
    np.testing.assert_array_equal(other.maps('random', X, t), once)
    assert not np.array_equal(once[0], once[1])
    reseeded = attr.Attribution(a.net, seed=1).maps('random', X, t)
    assert not np.array_equal(reseeded, once)


def test_gcm_ccm_sums_to_pixels_channels_times_the_class_score(gcm):
    a, X = gcm
    scores = a.scores(X)[0]
    for targets in (scores.argmax(axis=1), np.arange(len(X)) % 10):
        ccm = a.maps('ccm', X, targets).astype(np.float64)
        D, R, C = X.shape[1:]
        total = ccm.sum(axis=(1, 2))
        expected = R * C * D * scores[np.arange(len(X)), targets]
        np.testing.assert_allclose(total, expected, rtol=1e-5, atol=1e-3)
        cwm = a.maps('cwm', X, targets)
        np.testing.assert_allclose(
            ccm, cwm * (X / np.float32(255)).sum(axis=1), rtol=1e-5,
            atol=1e-6)


def test_cam_equals_grad_cam_up_to_a_positive_factor(cnn):
    a, X = cnn
    signs = set()
    for target in range(3):
        t = np.full(len(X), target, np.int32)
        cam, grad_cam = a.maps('cam', X, t), a.maps('grad-cam', X, t)
        signs.update(np.unique(np.sign(cam)))
        # behind an 8x8 input the last convolution is 2x2: the gradient of
        # a global average is W / 4
        np.testing.assert_allclose(grad_cam, np.maximum(cam, 0) / 4,
                                   rtol=1e-4, atol=1e-7)
        positive = cam > 1e-3 * np.abs(cam).max()
        ratio = grad_cam[positive] / cam[positive]
        assert ratio.min() > 0 and np.ptp(ratio) < 1e-3 * ratio.mean()
    assert {-1, 1} <= signs  # so the ReLU was tested too


def test_bilinear_upsampling_keeps_constants_and_ramps():
    U = attr.bilinear_matrix(8, 2)
    np.testing.assert_allclose(U.sum(axis=1), 1)
    ramp = U @ np.array([0.0, 1.0])
    # pixel centres of the 2-pixel map sit at output 1.5 and 5.5
    np.testing.assert_allclose(ramp, [0, 0, .125, .375, .625, .875, 1, 1])


@pytest.mark.parametrize('method, images, message', [
    ('ccm', (2, 3, 8, 8), "'ccm' needs a GCM model"),
    ('sharpness', (2, 3, 8, 8), "unknown method 'sharpness'"),
    ('gradient', (2, 3, 32, 32), 'images are 3x32x32 but the CNN takes '
                                 '3x8x8'),
])
def test_bad_requests_raise_one_line_errors(cnn, method, images, message):
    a, _ = cnn
    with pytest.raises(attr.AttributionError) as e:
        a.maps(method, np.zeros(images, np.float32), np.zeros(2, np.int32))
    assert message in str(e.value) and '\n' not in str(e.value)


def test_cam_is_for_the_cnn_only(linear):
    with pytest.raises(attr.AttributionError, match="'cam' needs a network"):
        linear[0].maps('cam', linear[2], np.zeros(5, np.int32))


@pytest.mark.parametrize('targets, error, message', [
    ([0, 3, 1, 1], ValueError, r'targets must be class indices 0\.\.2, not 3 '
                               r'\(targets\[1\]\)'),
    ([0, 1], ValueError, r'not shape \(2,\)'),
    # int32 once wrapped 2**32 round to class 0
    ([0, 2 ** 32, 1, 1], ValueError, r'not 4294967296 \(targets\[1\]\)'),
    # a float class was cut to an int: 1.7 drew class 1's map
    ([0, 1.7, 1, 1], TypeError, r'targets must be 4 integers, one class '
                                r'index in 0\.\.2 per image, not float64'),
    ([True, False, True, True], TypeError, 'not bool'),
], ids=['too-large', 'too-few', 'wraps', 'float', 'bool'])
def test_one_integer_target_class_per_image_in_range(cnn, targets, error,
                                                     message):
    a, X = cnn
    with pytest.raises(error, match=message) as e:
        a.maps('gradient', X, targets)
    assert isinstance(e.value, ValueError)  # InputTypeError is both


@pytest.mark.parametrize('keywords, error, message', [
    (dict(ig_steps=2.5), TypeError, 'ig_steps must be a positive int, not '
                                    'float 2.5'),
    (dict(ig_steps=0), ValueError, 'ig_steps must be a positive int, not 0'),
    (dict(batch_size=True), TypeError, 'batch_size must be a positive int, '
                                       'not bool True'),
    (dict(seed=-1), ValueError, r'seed must be an int in 0\.\.2\*\*32-1, '
                                'not -1'),
    (dict(seed=0.5), TypeError, 'seed must be an int'),
], ids=['ig-steps-float', 'ig-steps-0', 'batch-size-bool', 'seed-negative',
        'seed-float'])
def test_bad_settings_are_refused_when_made(cnn, keywords, error, message):
    with pytest.raises(error, match=message):
        attr.Attribution(cnn[0].net, **keywords)


def test_a_net_that_is_no_network_is_refused():
    with pytest.raises(attr.AttributionError, match='net must be a dict of '
                       'Lasagne layers with input, class_scores and prob'):
        attr.Attribution({'input': None})


def test_int64_images_are_refused_by_name(cnn):
    a, X = cnn
    with pytest.raises(attr.AttributionError, match='images must be uint8 '
                       r'\(pixels 0-255\) or float .* not int64'):
        a.maps('gradient', (X * 255).astype(np.int64), [0, 0, 0, 0])
