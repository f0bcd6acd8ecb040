"""The `compare` figure (gcm_lasagne.compare): GCM's CCM beside a CNN's CAM
of the same images, on tiny untrained 3-class models with 8x8 inputs. The
cells must be the maps the API and the attribution module give, at the
pixels the layout says."""
import os

import numpy as np
import pytest
from PIL import Image

import gcm_lasagne  # noqa: F401  (configures Theano)
import lasagne

from gcm_lasagne import api, attribution, checkpoint, cli, train
from gcm_lasagne import compare as cmp
from gcm_lasagne import visualize as vis
from gcm_lasagne.batches import to_float
from gcm_lasagne.images import read_images
from gcm_lasagne.models import build_model

CLASSES = ['circle', 'cross', 'square']
SHAPE = (3, 8, 8)


def _save(path, kind, seed, classes=CLASSES):
    lasagne.random.set_rng(np.random.RandomState(seed))
    meta = {'model': kind, 'classes': classes, 'input_shape': list(SHAPE),
            'config': train.default_config(model=kind, data='unused',
                                           download=False)}
    checkpoint.save(path, build_model(kind, len(classes), SHAPE), meta)
    return path


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp('models')
    return (_save(str(root / 'gcm.npz'), 'gcm', 0),
            _save(str(root / 'cnn.npz'), 'cnn', 1))


@pytest.fixture(scope='module')
def models(files):
    return tuple(api.load_model(f) for f in files)


@pytest.fixture(scope='module')
def image_files(tmp_path_factory):
    root = tmp_path_factory.mktemp('images')
    rng = np.random.RandomState(3)
    paths = []
    for i in range(4):
        paths.append(str(root / ('%d.png' % i)))
        Image.fromarray(rng.randint(0, 256, (8, 8, 3)).astype(
            np.uint8)).save(paths[-1])
    return paths


def _cell(png, layout, image, row, column):
    x0, y0, x1, y1 = layout.cell_box(image, row, column)
    z = layout.zoom
    return png[y0:y1:z, x0:x1:z] / 255.


def test_layout_puts_groups_in_rows_of_columns():
    one = cmp.CompareLayout(1, (32, 32))
    cell = 96
    assert one.size == (2 * vis.PAD + 3 * cell + 2 * cmp.CELL_GAP,
                        one.grid_top + one.group_h + vis.PAD)
    seven = cmp.CompareLayout(7, (32, 32), columns=3)
    assert (seven.columns, seven.rows) == (3, 3)
    assert seven.width == 2 * vis.PAD + 3 * one.group_w + 2 * cmp.GROUP_GAP
    assert seven.height == (seven.grid_top + 3 * one.group_h
                            + 2 * cmp.GROUP_GAP + vis.PAD)
    # image 4: second row, second group; cells do not overlap
    x, y = seven.group_origin(4)
    assert (x, y) == (vis.PAD + one.group_w + cmp.GROUP_GAP,
                      seven.grid_top + one.group_h + cmp.GROUP_GAP)
    boxes = [seven.cell_box(4, r, c) for r in (0, 1) for c in (0, 1, 2)]
    assert boxes[0][:2] == (x, y + vis.TEXT_H + 2)
    assert boxes[1][0] == boxes[0][2] + cmp.CELL_GAP
    assert boxes[3][1] == boxes[0][3] + vis.ROW_GAP
    assert seven.text_top(4, 1) + vis.TEXT_H <= y + one.group_h
    assert all(b[2] <= seven.width - vis.PAD for b in boxes)


def test_the_cells_are_gcms_ccm_and_the_cnns_cam_of_their_predictions(
        files, models, image_files, tmp_path):
    gcm, cnn = models
    text = cmp.run_compare(files[0], files[1], str(tmp_path), image_files,
                           echo=None)
    X = read_images(image_files, SHAPE)
    g, c = gcm.predict(X), cnn.predict(X)
    ccm = gcm.class_contribution_maps(X)[np.arange(4), g.label]
    cam = attribution.Attribution(cnn.net).maps('cam', X, c.label)
    png = np.asarray(Image.open(str(tmp_path / 'compare.png')).convert('RGB'))
    layout = cmp.CompareLayout(4, (8, 8))
    assert png.shape[1::-1] == layout.size
    for i in range(4):
        np.testing.assert_array_equal(_cell(png, layout, i, 0, 0) * 255,
                                      X[i].transpose(1, 2, 0))
        for column, m, colour in ((1, ccm[i], True), (2, cam[i], False)):
            positive, negative = vis.split_signed(m)
            scale = max(positive.max(), negative.max())  # its own
            for row, part in enumerate((positive, negative)):
                shown = _cell(png, layout, i, row, column)
                expected = (part.transpose(1, 2, 0) if colour
                            else np.stack([part] * 3, axis=-1))
                np.testing.assert_allclose(shown, expected / scale,
                                           atol=0.5 / 255 + 1e-6)
        line = text.splitlines()[i]
        assert line.startswith(image_files[i] + ': GCM %s (score %s'
                               % (CLASSES[g.label[i]], vis.format_score(
                                   g.class_scores[i, g.label[i]])))
        assert '| CNN %s (score %s' % (
            CLASSES[c.label[i]],
            vis.format_score(c.class_scores[i, c.label[i]])) in line
    # the CCM shown is Tile(CWM) x image, as Figure 6 draws it
    cwm = gcm.class_weight_maps(X)[np.arange(4), g.label]
    np.testing.assert_allclose(ccm, cwm[:, None] * to_float(X), rtol=1e-6,
                               atol=1e-7)


def test_the_figure_writes_each_prediction_and_flags_wrong_ones(tmp_path):
    rng = np.random.RandomState(0)
    images = rng.randint(0, 256, (3,) + SHAPE).astype(np.uint8)
    first = {'name': 'GCM', 'method': 'ccm',
             'maps': rng.normal(size=(3, 3, 8, 8)),
             'predicted': np.array([0, 1, 2]),
             'scores': np.array([1.5, -0.25, 0.001])}
    second = {'name': 'CNN', 'method': 'grad-cam',
              'maps': np.abs(rng.normal(size=(3, 8, 8))),
              'predicted': np.array([0, 2, 2]),
              'scores': np.array([12.0, 3.0, 4.0])}
    out = cmp.compare_figure(images, first, second, CLASSES,
                             str(tmp_path / 'c.png'), captions=['a', 'b',
                                                                'c'],
                             true_labels=np.array([0, 1, 1]), columns=2)
    assert out['texts'] == [[('circle', '+1.500'), ('circle', '+12.000')],
                            [('cross', '-0.250'), ('square', '+3.000')],
                            [('square', '+1.00e-03'), ('square', '+4.000')]]
    assert out['wrong'].tolist() == [[False, False], [False, True],
                                     [True, True]]
    png = np.asarray(Image.open(out['path']).convert('RGB'))
    layout = out['layout']
    assert png.shape[1::-1] == layout.size == cmp.CompareLayout(
        3, (8, 8), 2).size
    # a wrong prediction's class name is red, a right one's is not
    for i, c, red in ((1, 2, True), (1, 1, False), (0, 2, False)):
        x0, _, x1, _ = layout.cell_box(i, 1, c)
        y0 = layout.text_top(i, 0)
        text = png[y0:y0 + vis.TEXT_H, x0:x1].reshape(-1, 3)
        reddish = (text[:, 0] > 200) & (text[:, 1] < 80) & (text[:, 2] < 80)
        assert reddish.any() == red, (i, c)
    # Grad-CAM has no negative part: its lower cell is black
    assert not _cell(png, layout, 0, 1, 2).any()


def test_test_images_are_a_class_balanced_choice(files, tmp_path):
    root = tmp_path / 'data'
    rng = np.random.RandomState(4)
    for split in ('train', 'test'):
        for c in CLASSES:
            os.makedirs(str(root / split / c))
            for i in range(3):
                Image.fromarray(rng.randint(0, 256, (8, 8, 3)).astype(
                    np.uint8)).save(str(root / split / c / ('%d.png' % i)))
    text = cmp.run_compare(files[0], files[1], str(tmp_path / 'out'),
                           data_config_override={'data': str(root)},
                           count=5, echo=None)
    lines = text.splitlines()
    assert len(lines) == 6 and lines[-1].startswith('wrote ')
    shown = [line.split('(')[1].split(')')[0] for line in lines[:5]]
    assert shown[:3] == CLASSES and shown[3:] == CLASSES[:2]
    size = Image.open(str(tmp_path / 'out' / 'compare.png')).size
    assert size == cmp.CompareLayout(5, (8, 8)).size


def test_bad_requests_are_one_line_errors(files, image_files, tmp_path,
                                          capsys):
    gcm, cnn = files
    other = _save(str(tmp_path / 'four.npz'), 'cnn', 2,
                  CLASSES + ['star'])
    out = str(tmp_path / 'out')
    for argv, message in (
            ([cnn, gcm] + image_files,
             'compare takes a GCM model first (its CCMs are shown), not a '
             'cnn model'),
            ([gcm, gcm] + image_files,
             'compare takes a model with CAM second (the CNN baseline or '
             'resnet20), not a gcm model'),
            ([gcm, other] + image_files,
             'the two models do not share classes and input shape'),
            ([gcm, cnn, image_files[0], '--data', 'somewhere'],
             'give image files or test images (--data, --count), not both'),
            ([gcm, cnn, str(tmp_path / 'none.png')],
             'no image file at')):
        assert cli.main(['compare'] + argv + ['--out', out]) == 1
        err = capsys.readouterr().err
        assert err.startswith('error: ' + message) and err.count('\n') == 1
    assert not os.path.exists(out)


def test_captions_name_the_files_and_their_folders_when_stems_repeat():
    assert cmp._captions(['a/x.png', 'b/y.jpg']) == ['x', 'y']
    assert cmp._captions(['s/cat/0000.jpg', 's/dog/0000.jpg', 's/z.png']) == [
        'cat/0000', 'dog/0000', 's/z']
    assert cmp._captions(['a/cat/0.png', 'b/cat/0.jpg']) == ['cat/0 (1)',
                                                             'cat/0 (2)']
