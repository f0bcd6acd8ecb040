"""The Python API (gcm_lasagne.api): load_model, Model.predict and the maps,
on a tiny untrained 3-class GCM (and CNN) with 8x8 inputs. The GCM's
function is compiled once for the module (fixture `model`); bad input is
refused before anything is compiled."""
import os
import re

import numpy as np
import pytest
from PIL import Image

import gcm_lasagne
import lasagne
import theano

from gcm_lasagne import (api, attribution, checkpoint, cli,
                         images as image_files, train)
from gcm_lasagne.batches import to_float
from gcm_lasagne.models import build_model

CLASSES = ['circle', 'cross', 'square']
SHAPE = (3, 8, 8)


def _save(path, kind, seed=0):
    lasagne.random.set_rng(np.random.RandomState(seed))
    meta = {'model': kind, 'classes': CLASSES, 'input_shape': list(SHAPE),
            'config': train.default_config(model=kind, data='unused',
                                           download=False)}
    checkpoint.save(path, build_model(kind, len(CLASSES), SHAPE), meta)
    return path


@pytest.fixture(scope='module')
def model_file(tmp_path_factory):
    return _save(str(tmp_path_factory.mktemp('gcm') / 'model.npz'), 'gcm')


@pytest.fixture(scope='module')
def model(model_file):
    return gcm_lasagne.load_model(model_file)


@pytest.fixture(scope='module')
def cnn(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('cnn') / 'model.npz')
    return gcm_lasagne.load_model(_save(path, 'cnn', seed=1))


@pytest.fixture(scope='module')
def images():
    return np.random.RandomState(1).randint(0, 256, (5,) + SHAPE).astype(
        np.uint8)


def test_the_package_exports_the_api():
    assert gcm_lasagne.load_model is api.load_model
    assert gcm_lasagne.Model is api.Model
    assert gcm_lasagne.read_images is image_files.read_images


def test_a_loaded_model_describes_itself(model, model_file):
    assert model.kind == 'gcm' and model.classes == CLASSES
    assert model.input_shape == SHAPE and model.has_maps
    _, values, _ = checkpoint.read(model_file)
    for a, b in zip(lasagne.layers.get_all_param_values(model.net['prob']),
                    values):
        np.testing.assert_array_equal(a, b)
    assert model.meta['config']['model'] == 'gcm'
    assert repr(model) == '<Model gcm: 3 classes, input (3, 8, 8)>'


def test_predict_and_maps_have_their_shapes_and_agree(model, images):
    n, k = len(images), len(CLASSES)
    label, scores, prob = model.predict(images)
    assert label.shape == (n,) and label.dtype.kind == 'i'
    assert scores.shape == prob.shape == (n, k)
    assert scores.dtype == prob.dtype == np.float32
    assert (label == scores.argmax(axis=1)).all()
    e = np.exp(scores - scores.max(axis=1, keepdims=True))
    np.testing.assert_allclose(prob, e / e.sum(axis=1, keepdims=True),
                               rtol=1e-5)
    cwm = model.class_weight_maps(images)
    ccm = model.class_contribution_maps(images)
    assert cwm.shape == (n, k, 8, 8) and ccm.shape == (n, k, 3, 8, 8)
    assert cwm.dtype == ccm.dtype == np.float32
    # CCM = Tile(CWM) x image (pixels in [0, 1]); its mean is the score
    np.testing.assert_allclose(ccm,
                               cwm[:, :, None] * to_float(images)[:, None],
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ccm.mean(axis=(2, 3, 4)), scores, rtol=1e-4,
                               atol=1e-6)
    everything = model.explain(images)
    assert sorted(everything) == sorted(api.MAP_KEYS)
    for key, value in (('class_weight_map', cwm),
                       ('class_contribution_map', ccm)):
        np.testing.assert_array_equal(everything[key], value)
    # predict has a function of its own that draws no CCM: equal to rounding
    for key, value in (('class_scores', scores), ('prob', prob)):
        np.testing.assert_allclose(everything[key], value, rtol=1e-5,
                                   atol=1e-7, err_msg=key)


def test_uint8_float_and_any_batch_size_give_the_same(model, images):
    expected = model.explain(images)
    for X, batch_size in ((images, 2), (images / 255.0, None),
                          (to_float(images), 1)):
        got = model.explain(X, batch_size=batch_size)
        for key in api.MAP_KEYS:
            np.testing.assert_allclose(got[key], expected[key], rtol=1e-5,
                                       atol=1e-7, err_msg=key)


def test_two_functions_compiled_once_at_first_use(model, images,
                                                  monkeypatch):
    outputs = []
    real = theano.function
    monkeypatch.setattr(theano, 'function', lambda inputs, out, **k: (
        outputs.append(len(out)) or real(inputs, out, **k)))
    fresh = api.Model(model.net, model.meta)
    assert outputs == []            # building the object compiles nothing
    fresh.predict(images)
    fresh.evaluate(images, np.zeros(len(images), int))
    assert outputs == [2]           # the scores only: no CCM drawn
    fresh.class_weight_maps(images[:2])
    fresh.class_contribution_maps(images)
    fresh.explain(images, batch_size=3)
    fresh.predict(images[:1])
    assert outputs == [2, 4]


def test_the_api_equals_what_explain_writes(model, model_file, tmp_path):
    paths = []
    for i, size in enumerate(((8, 8), (12, 20))):  # the second is resized
        pixels = np.random.RandomState(i).randint(0, 256, size + (3,))
        paths.append(str(tmp_path / ('%d.png' % i)))
        Image.fromarray(pixels.astype(np.uint8)).save(paths[-1])
    out = tmp_path / 'out'
    # in this process: the command's compile reuses the module's C code
    assert cli.main(['explain', model_file, *paths, '--out', str(out)]) == 0
    X = gcm_lasagne.read_images(paths, model.input_shape)
    maps = model.explain(X)
    label = model.predict(X).label
    for i, stem in enumerate(('0', '1')):
        with np.load(str(out / (stem + '_ccm.npz')),
                     allow_pickle=False) as f:
            np.testing.assert_array_equal(f['image'], X[i])
            assert list(f['classes']) == model.classes
            for key in api.MAP_KEYS:
                np.testing.assert_array_equal(f[key], maps[key][i],
                                              err_msg=key)
            assert int(f['class_scores'].argmax()) == label[i]


def test_a_cnn_predicts_but_has_no_maps(cnn, images):
    assert cnn.kind == 'cnn' and not cnn.has_maps
    label, scores, prob = cnn.predict(images)
    assert label.shape == (5,) and scores.shape == prob.shape == (5, 3)
    np.testing.assert_allclose(prob.sum(axis=1), 1, rtol=1e-5)
    assert (label == prob.argmax(axis=1)).all()
    y = np.array([0, 1, 2, 1, 0])
    loss, p = cnn.evaluate(images, y)
    np.testing.assert_array_equal(p.label, label)
    assert loss == pytest.approx(-np.log(prob[np.arange(5), y]).mean(),
                                 rel=1e-5)
    for method in (cnn.class_weight_maps, cnn.class_contribution_maps):
        with pytest.raises(ValueError) as e:
            method(images)
        assert str(e.value) == (
            'this cnn model has no class weight or contribution maps; use a '
            'GCM model (gcm, gcm-clip or gcm-basic), or its '
            'class_activation_maps')


def test_a_cnn_has_the_attribution_modules_cams_of_every_class(cnn, images):
    assert cnn.figure_methods == ('cam', 'grad-cam')
    reference = attribution.Attribution(cnn.net)
    scores = cnn.predict(images).class_scores
    for method in ('cam', 'grad-cam'):
        maps = cnn.class_activation_maps(images, method, batch_size=2)
        assert maps.shape == (5, 3, 8, 8) and maps.dtype == np.float32
        for j in range(3):
            np.testing.assert_array_equal(
                maps[:, j], reference.maps(method, images,
                                           np.full(5, j)))
        if method == 'cam':
            # global average pooling then a dense layer: the CAM's mean
            # plus the class's bias is the class score
            bias = cnn.net['class_scores'].b.get_value()
            np.testing.assert_allclose(maps.mean(axis=(2, 3)) + bias,
                                       scores, rtol=1e-4, atol=1e-5)
            assert (maps < 0).any()
        else:
            assert (maps >= 0).all() and (maps > 0).any()
    # explain: the maps with the scores, and the predicted class's map
    out = cnn.explain(images)
    assert sorted(out) == sorted(api.CAM_KEYS)
    np.testing.assert_array_equal(out['class_activation_map'],
                                  cnn.class_activation_maps(images))
    np.testing.assert_allclose(out['class_scores'], scores, rtol=1e-6)
    predicted = cnn.attribution_maps(images, 'cam')
    np.testing.assert_array_equal(
        predicted, out['class_activation_map'][np.arange(5),
                                               scores.argmax(axis=1)])


def test_maps_a_model_does_not_have_are_value_errors(model, cnn, images):
    assert model.figure_methods == ('ccm',)
    for call, message in (
            (lambda: model.class_activation_maps(images),
             "'cam' needs a network ending in global average pooling"),
            (lambda: cnn.class_activation_maps(images, 'ccm'),
             "method must be one of cam, grad-cam, not 'ccm'"),
            (lambda: cnn.explain(images, method='ccm'),
             "this cnn model is explained by cam or grad-cam, not 'ccm'"),
            (lambda: model.explain(images, method='grad-cam'),
             "this gcm model is explained by ccm, not 'grad-cam'"),
            (lambda: cnn.attribution_maps(images, 'cwm'),
             "'cwm' needs a GCM model"),
            (lambda: cnn.attribution_maps(images, 'cam', [0, 1]),
             r'targets must be 5 integers, one class index in 0\.\.2 per '
             r'image, not shape \(2,\)'),
            (lambda: cnn.class_activation_maps(images[0]),
             r'one image\? pass images\[None\]')):
        with pytest.raises(ValueError, match=message) as e:
            call()
        assert _one_sentence(str(e.value)), str(e.value)


def _one_sentence(message):
    return '\n' not in message and not re.search(r'[.!?]\s+[A-Z]', message)


U8 = np.zeros((2,) + SHAPE, np.uint8)


@pytest.mark.parametrize('bad, message', [
    (U8.transpose(0, 2, 3, 1),
     r'must be an array of shape \(N, 3, 8, 8\) for this model, not '
     r'\(2, 8, 8, 3\) \(channels last\? pass '
     r'images.transpose\(0, 3, 1, 2\)\)'),
    (U8[0], r'not \(3, 8, 8\) \(one image\? pass images\[None\]\)'),
    (np.zeros((2, 3, 16, 16), np.uint8), r'not \(2, 3, 16, 16\)$'),
    (np.zeros((2, 1, 8, 8), np.uint8), r'shape \(N, 3, 8, 8\)'),
    (U8[:0], 'images holds no image'),
    (U8.astype(np.int64), r'uint8 \(pixels 0-255\) or float \(pixels in '
                          r'\[0, 1\]\), not int64'),
    (U8.astype(bool), 'not bool'),
    (U8.astype(np.float32) + 255, r'in \[0, 1\] \(give uint8 for 0-255\), '
                                  'but these range from 255 to 255'),
    (U8.astype(np.float32) - 0.5, 'range from -0.5 to -0.5'),
    (np.full((2,) + SHAPE, np.nan, np.float32), 'range from nan to nan'),
], ids=['channels-last', 'one-image', 'size', 'channels', 'empty', 'int64',
        'bool', 'float-0-255', 'negative', 'nan'])
def test_bad_images_are_a_one_sentence_value_error(model, bad, message):
    for method in (model.predict, model.class_weight_maps,
                   model.class_contribution_maps):
        with pytest.raises(ValueError, match=message) as e:
            method(bad)
        assert _one_sentence(str(e.value)), str(e.value)


def test_bad_labels_are_a_value_error(cnn, images):
    for labels, message in (([0, 1], 'must be 5 integers'),
                            ([0.5] * 5, 'must be 5 integers'),
                            ([0, 1, 2, 3, 0], r'class indices 0\.\.2')):
        with pytest.raises(ValueError, match=message) as e:
            cnn.evaluate(images, labels)
        assert _one_sentence(str(e.value))


def test_a_file_that_is_no_model_names_itself(tmp_path):
    with pytest.raises(checkpoint.CheckpointError, match='no model file'):
        gcm_lasagne.load_model(str(tmp_path / 'none.npz'))
    assert not os.path.exists(str(tmp_path / 'none.npz'))


def test_resnet20_is_explained_by_its_cam_too(tmp_path, images):
    resnet = gcm_lasagne.load_model(_save(str(tmp_path / 'r.npz'),
                                          'resnet20', seed=2))
    assert resnet.figure_methods == ('cam', 'grad-cam')
    out = resnet.explain(images)
    cam = out['class_activation_map']
    assert cam.shape == (5, 3, 8, 8)
    bias = resnet.net['class_scores'].b.get_value()
    np.testing.assert_allclose(cam.mean(axis=(2, 3)) + bias,
                               out['class_scores'], rtol=1e-4, atol=1e-5)


# ------------------------------------------- every argument, checked first

@pytest.fixture
def unrun(model):
    """The module's GCM as a fresh Model that fails the test if it runs
    the network: an argument error must come before any work."""
    fresh = api.Model(model.net, model.meta)

    def no_work(wanted):
        raise AssertionError('the network ran before the arguments were '
                             'checked')
    fresh._function = no_work
    return fresh


def _refused(call, error, message):
    with pytest.raises(error, match=message) as e:
        call()
    assert _one_sentence(str(e.value)), str(e.value)
    # a TypeError of ours is a ValueError too (errors.InputTypeError)
    assert isinstance(e.value, ValueError)
    return e.value


@pytest.mark.parametrize('size, error, shown', [
    (0, ValueError, '0'),            # was taken for the default
    (-1, ValueError, '-1'),          # was numpy's 'need at least one array'
    (1.5, TypeError, 'float 1.5'),
    (True, TypeError, 'bool True'),  # was a batch of one
    ('2', TypeError, "str '2'"),
], ids=['zero', 'negative', 'float', 'bool', 'str'])
def test_batch_size_must_be_a_positive_int_everywhere(unrun, cnn, images,
                                                      size, error, shown):
    message = 'batch_size must be a positive int, not %s$' % re.escape(shown)
    for call in (lambda: unrun.predict(images, size),
                 lambda: unrun.class_weight_maps(images, size),
                 lambda: unrun.class_contribution_maps(images, size),
                 lambda: unrun.explain(images, batch_size=size),
                 lambda: unrun.evaluate(images, [0] * 5, batch_size=size),
                 lambda: unrun.attribution_maps(images, 'ccm',
                                                batch_size=size),
                 lambda: cnn.class_activation_maps(images, batch_size=size),
                 lambda: api.Model(unrun.net, unrun.meta, batch_size=size)):
        _refused(call, error, message)


def test_a_list_of_images_is_checked_image_by_image(model, unrun, images):
    # a list of (C, H, W) images of one dtype is the array they make
    np.testing.assert_array_equal(model.predict(list(images)).class_scores,
                                  model.predict(images).class_scores)
    odd = np.zeros((3, 16, 16), np.uint8)
    for bad, error, message in (
            ([images[0], images[1], odd], ValueError,
             r'^images\[2\] has shape \(3, 16, 16\) but this model takes '
             r'images of shape \(3, 8, 8\)'),
            ([images[0], images[1].transpose(1, 2, 0)], ValueError,
             r'images\[1\] has shape \(8, 8, 3\) .*channels last'),
            ([images[0], to_float(images[1])], ValueError,
             r'^images mixes uint8 \(images\[0\]\) and float32 '
             r'\(images\[1\]\)'),
            ([], ValueError, '^images is an empty list; give at least one'),
            (['cat.png'], TypeError,
             r"^images\[0\] is the file name 'cat.png', not pixels; read "
             r'image files with gcm_lasagne.read_images'),
            ('cat.png', TypeError, "^images must be pixels, not the file "
                                   "name 'cat.png'"),
            (None, TypeError, r'^images must be a numpy array of pixels '
                              r'\(N, 3, 8, 8\), not None$')):
        _refused(lambda: unrun.predict(bad), error, message)


@pytest.mark.parametrize('targets, error, message', [
    ([0, 1, 2, 1, 0.5], TypeError,
     r'^targets must be 5 integers, one class index in 0\.\.2 per image, '
     r'not float64 \(5,\)$'),
    ([1.0] * 5, TypeError, 'not float64'),  # integral, still not an int
    ([True] * 5, TypeError, 'not bool'),
    ([0, 1, 2, 3, 0], ValueError,
     r'^targets must be class indices 0\.\.2, not 3 \(targets\[3\]\)$'),
    ([0, -1, 0, 0, 0], ValueError, r'not -1 \(targets\[1\]\)'),
    ([0, 1], ValueError, r'not shape \(2,\)$'),
    (2, ValueError, r'not shape \(\)$'),
], ids=['float', 'integral-float', 'bool', 'too-large', 'negative',
        'too-few', 'scalar'])
def test_targets_are_one_integer_class_per_image(unrun, images, targets,
                                                 error, message):
    _refused(lambda: unrun.attribution_maps(images, 'ccm', targets), error,
             message)


def test_labels_are_checked_before_the_network_runs(unrun, images):
    _refused(lambda: unrun.evaluate(images, [0.0, 1, 2, 1, 0]), TypeError,
             r'^labels must be 5 integers, one class index in 0\.\.2 per '
             r'image, not float64')
    _refused(lambda: unrun.evaluate(images, [0, 1, 2, 1, 7]), ValueError,
             r'^labels must be class indices 0\.\.2, not 7 \(labels\[4\]\)$')


def test_method_names_are_checked_before_the_network_runs(unrun, images):
    _refused(lambda: unrun.attribution_maps(images, 'sharpness'),
             ValueError, r"^unknown method 'sharpness' \(choose from ccm")
    _refused(lambda: unrun.attribution_maps(images, 'cam'), ValueError,
             "^method 'cam' needs a network ending in global average pooling")
    _refused(lambda: unrun.explain(images, method='cam'), ValueError,
             "^this gcm model is explained by ccm, not 'cam'$")


def test_a_model_is_made_of_a_matching_net_and_meta(model, cnn):
    _refused(lambda: gcm_lasagne.load_model(None), TypeError,
             r'^path must be a file name \(str or os.PathLike\), not '
             r'NoneType$')
    _refused(lambda: api.Model(model.net, {'model': 'gcm'}), ValueError,
             '^meta must be a dict with model, classes and input_shape')
    _refused(lambda: api.Model({'input': model.net['input']}, model.meta),
             ValueError, '^net must be a dict of Lasagne layers with input, '
                         'class_scores and prob')
    other = dict(model.meta, classes=CLASSES + ['star'])
    _refused(lambda: api.Model(model.net, other), ValueError,
             r'^net and meta disagree: the net has 3 classes and input '
             r'\(3, 8, 8\), meta 4 and \(3, 8, 8\)$')


def test_read_images_checks_its_arguments(tmp_path):
    path = str(tmp_path / 'a.png')
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)
    assert gcm_lasagne.read_images([path], (8, 8)).shape == (1, 3, 8, 8)
    for paths, shape, error, message in (
            ([], SHAPE, ValueError, '^paths is empty; give at least one'),
            (None, SHAPE, TypeError, '^paths must be a file name or a list '
                                     'of them, not NoneType$'),
            ([path, 3], SHAPE, TypeError,
             r'^paths\[1\] must be a file name \(str or os.PathLike\), not '
             r'int$'),
            ([path], (1, 8, 8), ValueError,
             r'^input_shape must be \(3, rows, cols\) or \(rows, cols\), '
             r'positive ints .*, not \(1, 8, 8\)$'),
            ([path], (8,), ValueError, r'not \(8,\)$'),
            ([path], (3, 8.5, 8), ValueError, r'not \(3, 8\.5, 8\)$')):
        _refused(lambda: gcm_lasagne.read_images(paths, shape), error,
                 message)
