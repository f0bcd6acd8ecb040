"""Figures 6-8 and `explain` (gcm_lasagne.visualize), on a tiny untrained
3-class GCM with 8x8 inputs. Theano compiles are the slow part: the maps
are computed once per module (fixture `maps`) and each command test
compiles once."""
import os

import numpy as np
import pytest
from PIL import Image

import gcm_lasagne  # noqa: F401  (configures Theano)
import lasagne

from gcm_lasagne import api, checkpoint, train
from gcm_lasagne.batches import to_float
from gcm_lasagne.errors import DataError, InputError
from gcm_lasagne.images import read_images
from gcm_lasagne import visualize as vis
from gcm_lasagne.models import build_cnn, build_gcm

CLASSES = ['circle', 'cross', 'square']
SHAPE = (3, 8, 8)
RED = (255, 0, 0)
WHITE = (255, 255, 255)


def _save_model(path, clip=False, seed=0):
    lasagne.random.set_rng(np.random.RandomState(seed))
    net = build_gcm(len(CLASSES), SHAPE, clip=clip)
    meta = {'model': 'gcm-clip' if clip else 'gcm', 'classes': CLASSES,
            'input_shape': list(SHAPE),
            'config': train.default_config(model='gcm', data='unused',
                                           download=False)}
    checkpoint.save(path, net, meta)
    return path


@pytest.fixture(scope='module')
def model_file(tmp_path_factory):
    return _save_model(str(tmp_path_factory.mktemp('model') / 'model.npz'))


@pytest.fixture(scope='module')
def images():
    return np.random.RandomState(1).randint(0, 256, (5,) + SHAPE).astype(
        np.uint8)


@pytest.fixture(scope='module')
def maps(model_file, images):
    return api.load_model(model_file).explain(images, batch_size=2)


@pytest.fixture(scope='module')
def cnn(tmp_path_factory):
    lasagne.random.set_rng(np.random.RandomState(2))
    path = str(tmp_path_factory.mktemp('cnn') / 'model.npz')
    meta = {'model': 'cnn', 'classes': CLASSES, 'input_shape': list(SHAPE),
            'config': train.default_config(model='cnn', data='unused',
                                           download=False)}
    checkpoint.save(path, build_cnn(len(CLASSES), SHAPE), meta)
    return api.load_model(path)


@pytest.fixture(scope='module')
def fig6(maps, images, tmp_path_factory):
    path = str(tmp_path_factory.mktemp('fig') / 'figure6.png')
    labels = np.array([0, 1, 2, 1, 0])
    out = vis.figure6(images, maps['class_contribution_map'],
                      maps['class_scores'], labels, CLASSES, path)
    return out, labels


# ------------------------------------------------------------ the maps

def test_maps_have_the_shapes_and_the_ccm_is_tile_cwm_times_image(maps,
                                                                  images):
    n, k = len(images), len(CLASSES)
    assert maps['class_weight_map'].shape == (n, k, 8, 8)
    assert maps['class_contribution_map'].shape == (n, k, 3, 8, 8)
    assert maps['class_scores'].shape == maps['prob'].shape == (n, k)
    assert all(v.dtype == np.float32 for v in maps.values())
    expected = (maps['class_weight_map'][:, :, None]
                * to_float(images)[:, None])
    np.testing.assert_allclose(maps['class_contribution_map'], expected,
                               rtol=1e-6, atol=1e-7)
    # eq. 3: the score is the CCM's mean; prob its softmax
    np.testing.assert_allclose(maps['class_contribution_map'].mean(
        axis=(2, 3, 4)), maps['class_scores'], rtol=1e-4, atol=1e-6)
    e = np.exp(maps['class_scores'] - maps['class_scores'].max(1, keepdims=1))
    np.testing.assert_allclose(maps['prob'], e / e.sum(1, keepdims=1),
                               rtol=1e-5)


def test_a_cnn_is_not_drawn_with_contribution_maps(cnn, tmp_path):
    with pytest.raises(ValueError, match="this cnn model is explained by "
                                         "cam or grad-cam, not 'ccm'"):
        vis.run_explain(cnn, [], str(tmp_path / 'out'), echo=None,
                        method='ccm')
    assert not (tmp_path / 'out').exists()


def test_positive_and_negative_parts_recombine_to_the_ccm(maps):
    ccm = maps['class_contribution_map']
    positive, negative = vis.split_signed(ccm)
    assert (positive >= 0).all() and (negative >= 0).all()
    assert (positive * negative == 0).all()
    assert np.array_equal(positive - negative, ccm)
    assert (positive > 0).any() and (negative > 0).any()  # both drawn


# ------------------------------------------------------------ Figure 6/7

@pytest.mark.parametrize('positive_only', [False, True])
@pytest.mark.parametrize('num_images', [1, 2, 5])
def test_png_has_the_grid_size_for_classes_and_images(
        maps, images, tmp_path, positive_only, num_images):
    path = str(tmp_path / 'f.png')
    out = vis.figure6(images[:num_images],
                      maps['class_contribution_map'][:num_images],
                      maps['class_scores'][:num_images],
                      [0] * num_images, CLASSES, path, positive_only)
    expected = vis.grid_size(3, num_images, positive_only, (8, 8))
    assert Image.open(path).size == out['size'] == expected


def test_grid_size_grows_by_a_column_per_class_and_a_block_per_image():
    cell = vis.upscale_factor(32, 32) * 32
    assert cell == 96  # CIFAR's 32x32 drawn x3
    w1, h1 = vis.grid_size(10, 1)
    w2, h2 = vis.grid_size(11, 3)
    assert w1 == 2 * vis.PAD + 11 * cell + 10 * vis.GAP
    assert w2 - w1 == cell + vis.GAP
    block = 2 * cell + vis.ROW_GAP + 2 + vis.TEXT_H
    assert h2 - h1 == 2 * (block + vis.BLOCK_GAP)
    w3, h3 = vis.grid_size(11, 3, positive_only=True)
    assert w3 == w2 and h2 - h3 == 3 * (cell + vis.ROW_GAP)


def _ring(box):
    """Four pixels of the frame ring around a cell box, one a side."""
    x0, y0, x1, y1 = box
    xm, ym = (x0 + x1) // 2, (y0 + y1) // 2
    return [(x0 - 2, ym), (x1 + 1, ym), (xm, y0 - 2), (xm, y1 + 1)]


def test_red_frame_sits_on_the_true_class_cells(fig6):
    out, labels = fig6
    png = Image.open(out['path']).convert('RGB')
    layout = out['layout']
    for i, label in enumerate(labels):
        for row in (0, 1):
            for j in range(len(CLASSES)):
                box = layout.cell_box(i, row, j + 1)
                colours = {png.getpixel(p) for p in _ring(box)}
                assert colours == ({RED} if j == label else {WHITE}), (i, j)


def test_cells_show_the_parts_on_one_scale_per_image(fig6, maps, images):
    out, _ = fig6
    png = np.asarray(Image.open(out['path']).convert('RGB'))
    layout = out['layout']
    z = layout.zoom
    for i in range(len(images)):
        ccm = maps['class_contribution_map'][i]
        positive, negative = vis.split_signed(ccm)
        scale = max(positive.max(), negative.max())
        assert out['scales'][i] == pytest.approx(scale)
        x0, y0, x1, y1 = layout.cell_box(i, 0, 0)
        assert np.array_equal(png[y0:y1:z, x0:x1:z],
                              images[i].transpose(1, 2, 0))
        for j in range(len(CLASSES)):
            for row, part in enumerate((positive, negative)):
                x0, y0, x1, y1 = layout.cell_box(i, row, j + 1)
                shown = png[y0:y1:z, x0:x1:z].transpose(2, 0, 1) / 255.
                np.testing.assert_allclose(shown, part[j] / scale,
                                           atol=0.5 / 255 + 1e-6)


def test_each_printed_score_is_the_models_score(fig6, maps):
    out, _ = fig6
    assert out['labels'] == [[vis.format_score(s) for s in row]
                             for row in maps['class_scores']]
    printed = np.array([[float(t) for t in row] for row in out['labels']])
    # half a unit of the last printed digit
    np.testing.assert_allclose(printed, maps['class_scores'], rtol=5e-3,
                               atol=5e-4 + 1e-7)


def test_figure8_pairs_image_and_true_class_ccm(maps, images, tmp_path):
    path = str(tmp_path / 'f8.png')
    ccm = maps['class_contribution_map'][:, 1]
    out = vis.figure8(images, ccm, path, columns=2)
    png = np.asarray(Image.open(path).convert('RGB'))
    assert png.shape[1::-1] == out['size']
    z, cw = vis.upscale_factor(8, 8), 8 * vis.upscale_factor(8, 8)
    x, y = vis.PAD, vis.PAD                       # the first pair
    assert np.array_equal(png[y:y + cw:z, x:x + cw:z],
                          images[0].transpose(1, 2, 0))
    positive = np.maximum(ccm[0], 0)
    shown = png[y:y + cw:z, x + cw + 2:x + 2 * cw + 2:z].transpose(2, 0, 1)
    np.testing.assert_allclose(shown / 255., positive / positive.max(),
                               atol=0.5 / 255 + 1e-6)


def test_figures_return_the_pil_image_they_write(maps, images, tmp_path):
    ccm, scores = maps['class_contribution_map'], maps['class_scores']
    six = vis.figure6(images[:2], ccm[:2], scores[:2], [0, 1], CLASSES,
                      str(tmp_path / 'f6.png'))
    eight = vis.figure8(images, ccm[:, 0], str(tmp_path / 'f8.png'))
    for out in (six, eight):
        assert isinstance(out['image'], Image.Image)
        with Image.open(out['path']) as png:
            assert np.array_equal(np.asarray(png.convert('RGB')),
                                  np.asarray(out['image']))
    # path None: the image only, nothing written
    alone = vis.figure6(images[:2], ccm[:2], scores[:2], [0, 1], CLASSES,
                        None)
    assert np.array_equal(np.asarray(alone['image']),
                          np.asarray(six['image']))
    assert vis.figure8(images, ccm[:, 0], None)['size'] == eight['size']
    assert sorted(os.listdir(tmp_path)) == ['f6.png', 'f8.png']


def test_figures_refuse_arguments_that_do_not_match(maps, images,
                                                     tmp_path):
    """A mismatch is one InputError (a ValueError) naming the shapes, and
    no file."""
    ccm, scores = maps['class_contribution_map'], maps['class_scores']
    n, k = scores.shape
    path = str(tmp_path / 'f.png')
    labels = [0] * n
    cases = [
        ('figure6', (images[:, :2], ccm, scores, labels, CLASSES),
         'images must be'),
        ('figure6', (images, ccm[:1], scores, labels, CLASSES),
         'do not match'),
        ('figure6', (images, ccm[..., :-1], scores, labels, CLASSES),
         'do not match'),
        ('figure6', (images, ccm, scores[:, :-1], labels, CLASSES),
         'scores must be'),
        ('figure6', (images, ccm, scores, labels + [0], CLASSES), 'labels'),
        ('figure6', (images, ccm, scores, labels, CLASSES[:-1]),
         'class names'),
        ('figure8', (images, ccm), 'do not match'),  # every class's CCM
        ('figure8', (images, ccm[:, 0, :2]), 'do not match')]
    for name, args, message in cases:
        with pytest.raises(InputError, match=message):
            getattr(vis, name)(*(args + (path,)))
    with pytest.raises(InputError, match='1 captions for %d images' % n):
        vis.figure8(images, ccm[:, 0], path, captions=['one'])
    assert not os.path.exists(path)
    # what they take: colour CCMs, and one-channel maps such as CAMs
    vis.figure6(images, ccm[:, :, 0], scores, labels, CLASSES, None,
                method='cam')
    vis.figure8(images, ccm[:, 0, 0], None)


def test_choose_examples_takes_correct_ones_round_robin():
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    predicted = np.array([0, 0, 1, 1, 0, 0, 1, 2])
    a = vis.choose_examples(labels, predicted, CLASSES, per_class=2, seed=3)
    assert list(a) == list(vis.choose_examples(labels, predicted, CLASSES,
                                               per_class=2, seed=3))
    assert (labels[a] == predicted[a]).all()
    assert list(labels[a[:3]]) == [0, 1, 2] and len(a) == 4
    assert sorted(a) == [0, 1, 3, 7]


# ------------------------------------------------------------ commands

def _png(path, mode, size, seed=0):
    rng = np.random.RandomState(seed)
    channels = {'L': None, 'RGB': 3}[mode]
    shape = (size[1], size[0]) + ((channels,) if channels else ())
    Image.fromarray(rng.randint(0, 256, shape).astype(np.uint8),
                    mode).save(path)
    return str(path)


def test_explain_writes_figure_and_maps(model_file, tmp_path):
    big = _png(tmp_path / 'big.png', 'RGB', (24, 16), seed=2)
    gray = _png(tmp_path / 'gray.png', 'L', (8, 8), seed=3)
    out = tmp_path / 'out'
    text = vis.run_explain(model_file, [big, gray], str(out), top=2,
                           echo=None)
    assert 'resized from 16x24 to 8x8' in text and 'mode L' in text
    assert sorted(os.listdir(out)) == ['big_ccm.npz', 'big_ccm.png',
                                       'gray_ccm.npz', 'gray_ccm.png']
    for stem in ('big', 'gray'):
        png = Image.open(out / (stem + '_ccm.png'))
        assert png.size == vis.grid_size(3, 1, False, (8, 8))
        with np.load(out / (stem + '_ccm.npz'), allow_pickle=False) as f:
            m = {k: f[k] for k in f.files}
        assert m['class_weight_map'].shape == (3, 8, 8)
        assert m['class_contribution_map'].shape == (3, 3, 8, 8)
        assert m['class_scores'].shape == m['prob'].shape == (3,)
        assert list(m['classes']) == CLASSES and m['image'].shape == SHAPE
        np.testing.assert_allclose(
            m['class_contribution_map'],
            m['class_weight_map'][:, None] * to_float(m['image']),
            rtol=1e-6, atol=1e-7)
        # the top lines print the model's scores, best first
        order = np.argsort(-m['class_scores'])[:2]
        for j in order:
            assert '. %-6s  score %s  prob' % (
                CLASSES[j], vis.format_score(m['class_scores'][j])) in text
        # the frame marks the predicted class (no true label here)
        box = vis.figure6_layout(3, 1, False, (8, 8)).cell_box(
            0, 0, int(order[0]) + 1)
        assert {png.convert('RGB').getpixel(p) for p in _ring(box)} == {RED}


def test_explain_rejects_a_non_image_before_computing(model_file, tmp_path):
    bad = tmp_path / 'readme.jpg'
    bad.write_bytes(b'\x00\x01 not a jpeg')
    with pytest.raises(DataError, match='readme.jpg: not a readable'):
        vis.run_explain(model_file, [str(bad)], str(tmp_path / 'o'),
                        echo=None)
    assert not (tmp_path / 'o').exists()


def test_explain_without_a_model_file(tmp_path):
    png = _png(tmp_path / 'a.png', 'RGB', (8, 8))
    with pytest.raises(checkpoint.CheckpointError, match='no model file'):
        vis.run_explain(str(tmp_path / 'none.npz'), [png], str(tmp_path),
                        echo=None)


def test_figures_from_the_models_image_folder(model_file, images, maps,
                                              tmp_path):
    # Every image in every class folder: whatever the untrained net
    # predicts, each predicted class has a correctly classified example.
    root = tmp_path / 'folder'
    for split in ('train', 'test'):
        for c in CLASSES:
            os.makedirs(root / split / c)
            for i, img in enumerate(images):
                Image.fromarray(img.transpose(1, 2, 0)).save(
                    root / split / c / ('%d.png' % i))
    out = tmp_path / 'figs'
    paths = vis.run_figures(model_file, str(out),
                            data_config_override={'data': str(root)})
    assert paths == [str(out / 'figure6.png'), str(out / 'figure8.png')]
    shown = len(set(maps['prob'].argmax(1)))  # one per predicted class
    assert Image.open(paths[0]).size == vis.grid_size(3, shown, False, (8, 8))


def test_clipped_model_gives_figure7_from_arrays(images, tmp_path):
    clip = _save_model(str(tmp_path / 'clip.npz'), clip=True, seed=4)
    X = np.concatenate([images] * 3)          # each image once per label
    y = np.repeat(np.arange(3), len(images)).astype(np.int32)
    paths = vis.run_figures(clip, str(tmp_path / 'f'), images=X, labels=y,
                            figure8_count=4)
    assert [os.path.basename(p) for p in paths] == ['figure7.png',
                                                    'figure8.png']
    width, height = Image.open(paths[0]).size
    assert width == vis.grid_size(3, 1, True, (8, 8))[0]
    assert height in [vis.grid_size(3, k, True, (8, 8))[1] for k in (1, 2, 3)]


def _cli(*args):
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return subprocess.run([sys.executable, 'run_cifar10.py'] + list(args),
                          cwd=root, capture_output=True, text=True)


def test_demo_draws_figures_6_and_8_from_the_shipped_model(tmp_path):
    done = _cli('--results', str(tmp_path), 'demo')
    assert done.returncode == 0, done.stderr
    demo = tmp_path / 'demo'  # RESULTS/demo, no --out given
    with Image.open(str(demo / 'figure6.png')) as im:
        # 10 classes; one image per class that the model got right (at most)
        sizes = [vis.grid_size(10, k) for k in range(1, 11)]
        assert im.size in [tuple(s) for s in sizes]
    assert os.path.getsize(str(demo / 'figure8.png')) > 10000


def test_explain_command_line_errors_are_one_line(model_file, tmp_path):
    junk = tmp_path / 'junk.png'
    junk.write_bytes(b'not an image')
    done = _cli('explain', model_file, str(junk), '--out', str(tmp_path))
    assert done.returncode == 1
    assert done.stderr.count('\n') == 1 and 'not a readable image' in done.stderr
    missing = _cli('explain', str(tmp_path / 'none.npz'), str(junk))
    assert missing.returncode == 1 and 'no model file' in missing.stderr


# ------------------------------------------------------------ CAM, Grad-CAM

def test_a_cnn_figure_is_figure6s_layout_with_its_cams(cnn, images,
                                                       tmp_path):
    cam = cnn.class_activation_maps(images)     # the attribution module's
    scores = cnn.predict(images).class_scores
    labels = np.array([2, 0, 1, 1, 2])
    path = str(tmp_path / 'cam.png')
    out = vis.figure6(images, cam, scores, labels, CLASSES, path,
                      method='cam')
    assert out['size'] == vis.grid_size(3, 5, False, (8, 8))
    assert out['legend'][0].startswith('CAM: Class Activation Maps')
    # (3 narrow columns cut the caption short; 10 classes hold it all)
    assert ('Cells: positive part max(CAM, 0) above negative part '
            'max(-CAM, 0), one brightness scale per image; grey: the map '
            'has one channel.') == vis.legend_text('cam', 'true', False)[1]
    png = np.asarray(Image.open(path).convert('RGB'))
    layout, z = out['layout'], out['layout'].zoom
    for i in range(len(images)):
        positive, negative = vis.split_signed(cam[i])
        scale = max(positive.max(), negative.max())  # one per image
        assert scale > 0 and out['scales'][i] == pytest.approx(scale)
        for j in range(len(CLASSES)):
            for row, part in enumerate((positive, negative)):
                x0, y0, x1, y1 = layout.cell_box(i, row, j + 1)
                shown = png[y0:y1:z, x0:x1:z] / 255.
                for channel in range(3):        # grey: one channel
                    np.testing.assert_allclose(shown[..., channel],
                                               part[j] / scale,
                                               atol=0.5 / 255 + 1e-6)
                ring = {tuple(png[y, x]) for x, y in _ring((x0, y0, x1, y1))}
                assert ring == ({RED} if j == labels[i] else {WHITE})
    assert out['labels'] == [[vis.format_score(v) for v in row]
                             for row in scores]


def test_explain_draws_a_cnns_grad_cam_positive_parts_only(cnn, tmp_path):
    image = _png(tmp_path / 'a.png', 'RGB', (8, 8), seed=5)
    out = tmp_path / 'out'
    text = vis.run_explain(cnn, [image], str(out), echo=None,
                           method='grad-cam')
    assert 'wrote a_grad-cam.png, a_grad-cam.npz' in text
    assert sorted(os.listdir(out)) == ['a_grad-cam.npz', 'a_grad-cam.png']
    with Image.open(out / 'a_grad-cam.png') as png:
        assert png.size == vis.grid_size(3, 1, True, (8, 8))
    with np.load(out / 'a_grad-cam.npz', allow_pickle=False) as f:
        saved = {k: f[k] for k in f.files}
    assert str(saved['method']) == 'grad-cam'
    X = read_images([image], SHAPE)
    np.testing.assert_array_equal(saved['class_activation_map'],
                                  cnn.class_activation_maps(X, 'grad-cam')[0])
    np.testing.assert_array_equal(saved['image'], X[0])
    assert sorted(saved) == sorted(api.CAM_KEYS + ('classes', 'image',
                                                   'method'))


def test_explaining_with_another_method_keeps_the_first_ones_files(
        cnn, tmp_path):
    """CAM then Grad-CAM into one folder: each method's .npz is its own
    (both were <stem>_maps.npz once, Grad-CAM's replacing CAM's)."""
    image = _png(tmp_path / 'a.png', 'RGB', (8, 8), seed=6)
    out = tmp_path / 'out'
    vis.run_explain(cnn, [image], str(out), echo=None, method='cam')
    first = {n: (out / n).read_bytes() for n in os.listdir(out)}
    assert sorted(first) == ['a_cam.npz', 'a_cam.png']
    vis.run_explain(cnn, [image], str(out), echo=None, method='grad-cam')
    assert sorted(os.listdir(out)) == ['a_cam.npz', 'a_cam.png',
                                       'a_grad-cam.npz', 'a_grad-cam.png']
    for name, data in first.items():
        assert (out / name).read_bytes() == data, name
    X = read_images([image], SHAPE)
    for method in ('cam', 'grad-cam'):
        with np.load(out / ('a_%s.npz' % method), allow_pickle=False) as f:
            assert str(f['method']) == method
            np.testing.assert_array_equal(
                f['class_activation_map'],
                cnn.class_activation_maps(X, method)[0])


def test_figures_of_a_cnn_are_figure6_and_8_of_its_cam(cnn, images,
                                                       tmp_path):
    X = np.concatenate([images] * 3)          # each image once per label
    y = np.repeat(np.arange(3), len(images)).astype(np.int32)
    paths = vis.run_figures(cnn, str(tmp_path), images=X, labels=y,
                            figure8_count=4)
    assert [os.path.basename(p) for p in paths] == ['figure6-cam.png',
                                                    'figure8-cam.png']
    with Image.open(paths[0]) as png:
        assert png.size in [vis.grid_size(3, k, False, (8, 8))
                            for k in (1, 2, 3)]
    # Figure 8: the true class's positive CAM, in grey, beside the image
    correct = np.flatnonzero(cnn.predict(X).label == y)
    chosen = vis.choose_examples(y, cnn.predict(X).label, CLASSES, 2, 1)[:4]
    assert set(chosen) <= set(correct)
    cam = cnn.attribution_maps(X[chosen[:1]], 'cam', y[chosen[:1]])[0]
    png = np.asarray(Image.open(paths[1]).convert('RGB'))
    z, cw = vis.upscale_factor(8, 8), 8 * vis.upscale_factor(8, 8)
    x, top = vis.PAD + cw + 2, vis.PAD
    positive = np.maximum(cam, 0)
    np.testing.assert_allclose(png[top:top + cw:z, x:x + cw:z, 1] / 255.,
                               positive / positive.max(),
                               atol=0.5 / 255 + 1e-6)


def test_explain_on_a_gcm_refuses_cam_in_one_line(model_file, tmp_path,
                                                  capsys):
    from gcm_lasagne import cli
    image = _png(tmp_path / 'a.png', 'RGB', (8, 8))
    assert cli.main(['explain', model_file, image, '--method', 'cam',
                     '--out', str(tmp_path / 'o')]) == 1
    err = capsys.readouterr().err
    assert err == "error: this gcm model is explained by ccm, not 'cam'\n"
    assert not (tmp_path / 'o').exists()


@pytest.mark.parametrize('method, positive_only', [
    ('ccm', False), ('ccm', True), ('cam', False), ('grad-cam', True)])
def test_ten_classes_hold_the_whole_caption(method, positive_only):
    shape = (1, 10) + ((3,) if method == 'ccm' else ()) + (32, 32)
    out = vis.figure6(np.zeros((1, 3, 32, 32), np.uint8),
                      np.random.RandomState(0).normal(size=shape),
                      np.zeros((1, 10)), [0], ['class%d' % k
                                               for k in range(10)],
                      None, positive_only, method=method)
    assert ' '.join(out['legend']) == ' '.join(
        vis.legend_text(method, 'true', positive_only))
    assert out['legend'][0].startswith(vis.METHODS[method][0] + ': ')
