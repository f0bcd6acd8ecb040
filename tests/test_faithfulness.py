"""Faithfulness metrics (gcm_lasagne.faithfulness) where the answer is known
by hand, the randomisation check on the shipped GCM, and the
`faithfulness` command with its one-line errors."""
import csv
import os
import sys

import numpy as np
import pytest
from PIL import Image

import gcm_lasagne  # noqa: F401  (configures Theano)
import lasagne

from gcm_lasagne import attribution as attr
from gcm_lasagne import checkpoint, cli, shipped, train
from gcm_lasagne.images import read_images
from gcm_lasagne import faithfulness as faith
from gcm_lasagne import faithfulness_run as faith_run
from gcm_lasagne.models import build_model

from test_attribution import linear_net

CLASSES = ['dark', 'light']


# ------------------------------------------------- deletion, insertion

@pytest.fixture(scope='module')
def linear():
    net, w = linear_net()
    X = np.random.RandomState(4).uniform(size=(6, 3, 4, 4)).astype(np.float32)
    return attr.Attribution(net, ig_steps=2), w, X


def test_area_is_the_trapezoid_rule():
    np.testing.assert_allclose(faith.area([[0, 1], [2, 2]]), [0.5, 2])
    np.testing.assert_allclose(faith.area([0, 1, 0]), 0.5)


def test_true_attribution_order_beats_random_orders(linear):
    """Deleting (inserting) pixels in the order of their true contribution
    w x leaves the smallest (largest) score after every step, so no other
    order has a smaller deletion (larger insertion) area."""
    a, w, X = linear
    t = np.zeros(len(X), np.int32)
    prob = lambda x: a.scores(x)[1]  # noqa: E731
    black = np.zeros_like(X)
    truth = a.maps('gradient-x-input', X, t)
    d, ins = faith.perturbation_curves(prob, X, t, truth, black, steps=16)
    assert d.shape == (6, 17)
    np.testing.assert_allclose(d[:, 0], prob(X)[:, 0], rtol=1e-6)
    np.testing.assert_allclose(d[:, -1], prob(black)[:, 0], rtol=1e-6)
    np.testing.assert_allclose(ins[:, 0], d[:, -1], rtol=1e-6)
    np.testing.assert_allclose(ins[:, -1], d[:, 0], rtol=1e-6)
    rng = np.random.RandomState(0)
    for _ in range(20):
        other = rng.uniform(size=truth.shape)
        d2, ins2 = faith.perturbation_curves(prob, X, t, other, black, 16)
        assert (faith.area(d) <= faith.area(d2) + 1e-9).all()
        assert (faith.area(ins) >= faith.area(ins2) - 1e-9).all()
        assert (faith.area(d) < faith.area(d2)).any()


def test_ties_are_not_broken_in_raster_order():
    ranks = faith.pixel_ranks(np.zeros((2, 8, 8)))
    assert sorted(ranks[0]) == list(range(64))
    np.testing.assert_array_equal(ranks[0], ranks[1])
    assert not np.array_equal(ranks[0], np.arange(64))
    assert list(faith.pixel_ranks(np.array([[[1, 3], [2, 0]]]))[0]) == \
        [2, 0, 1, 3]


def test_baselines():
    X = np.random.RandomState(0).uniform(size=(2, 3, 6, 6)).astype(
        np.float32)
    assert not faith.baseline_images(X, 'black').any()
    mean = faith.baseline_images(X, 'mean')
    np.testing.assert_allclose(mean[1, :, 4, 2], X.mean(axis=(0, 2, 3)),
                               rtol=1e-6)
    blur = faith.baseline_images(X, 'blur')
    assert blur.shape == X.shape and blur.std() < X.std()


# ------------------------------------------------------------ ROAD

def dense_imputation(image, removed):
    """The imputation system written out pixel by pixel, solved densely."""
    D, R, C = image.shape
    unknown = [(r, c) for r in range(R) for c in range(C) if removed[r, c]]
    index = {p: i for i, p in enumerate(unknown)}
    A, b = np.eye(len(unknown)), np.zeros((len(unknown), D))
    for i, (r, c) in enumerate(unknown):
        near = [(r + dr, c + dc, 1 / 6. if dr == 0 or dc == 0 else 1 / 12.)
                for dr in (-1, 0, 1) for dc in (-1, 0, 1)
                if (dr or dc) and 0 <= r + dr < R and 0 <= c + dc < C]
        total = sum(w for _, _, w in near)
        for rr, cc, w in near:
            if (rr, cc) in index:
                A[i, index[rr, cc]] -= w / total
            else:
                b[i] += w / total * image[:, rr, cc]
    out = image.astype(np.float64).copy()
    x = np.linalg.solve(A, b)
    for i, (r, c) in enumerate(unknown):
        out[:, r, c] = x[i]
    return out


def test_road_imputation_equals_a_direct_dense_solve():
    rng = np.random.RandomState(0)
    images = rng.uniform(size=(2, 3, 5, 6))
    removed = rng.uniform(size=(2, 5, 6)) < 0.6
    removed[1, :, :3] = True  # a large hole at the border too
    together = faith.impute(images, removed, noise=0)
    for i in range(2):
        expected = dense_imputation(images[i], removed[i])
        np.testing.assert_allclose(together[i], expected, atol=1e-12)
        np.testing.assert_array_equal(together[i][:, ~removed[i]],
                                      images[i][:, ~removed[i]])
    noisy = faith.impute(images, removed, noise=0.01,
                         rng=np.random.RandomState(1))
    change = (noisy - together)[:, :, removed[0] & removed[1]]
    assert 0.003 < change.std() < 0.03
    np.testing.assert_array_equal(noisy[:, :, ~removed[0] & ~removed[1]],
                                  images[:, :, ~removed[0] & ~removed[1]])


def test_road_most_relevant_first_removes_the_evidence():
    """A 'model' that says class 0 when some pixel is bright: a 3x3 bright
    square in a dark 10x10 image is 9% of it. Imputing 10% or more of the
    pixels brightest first fills the square from its dark neighbours
    (class 1); least relevant first keeps it up to 90%."""
    X = np.zeros((1, 3, 10, 10), np.float32)
    X[0, :, 2:5, 6:9] = 1
    maps = X[:, 0] + np.random.RandomState(0).uniform(0, 0.1, (1, 10, 10))

    def scores(x):
        bright = x.reshape(len(x), -1).max(axis=1) > 0.5
        return np.stack([bright, ~bright], axis=1).astype(np.float32)

    morf, lerf = faith.road(scores, X, np.array([0]), maps)
    assert morf.shape == lerf.shape == (1, 9)
    assert not morf.any() and lerf.all()


# ------------------------------------------------------------ randomisation

def test_spearman():
    a = np.random.RandomState(0).uniform(size=(3, 4, 4))
    b = a.copy()
    b[1] = -a[1]
    b[2] = 0
    np.testing.assert_allclose(faith.spearman(a, b), [1, -1, 0])


@pytest.fixture(scope='module')
def gcm():
    net, meta, _ = checkpoint.load(shipped.model_path())
    X = read_images(shipped.sample_paths()[::6], meta['input_shape'])
    return attr.Attribution(net, ig_steps=4), meta, X


def test_randomisation_lowers_every_weight_dependent_method(gcm):
    a, meta, X = gcm
    t = a.scores(X)[0].argmax(axis=1)
    before = {m: a.maps(m, X, t) for m in a.methods}
    layers, rho = faith.randomisation_check(
        a, faith.fresh_network(meta), X, t, a.methods)
    assert layers[0] == 'conv15' and layers[-1] == 'conv1'
    assert len(layers) == 15 and 'deconv13' in layers
    for m in a.methods:
        assert rho[m].shape == (15, len(X))
        if m == 'random':
            np.testing.assert_array_equal(rho[m], 1)
        else:
            assert np.abs(rho[m][-1]).mean() < 0.5, m
        # the trained weights are back
        np.testing.assert_array_equal(a.maps(m, X, t), before[m])


def test_cnn_blocks_skip_the_pixel_mean():
    net = build_model('cnn', 10)
    names = [name for name, _ in faith.layer_blocks(net)]
    assert names == ['class_scores'] + ['conv%d' % i
                                        for i in range(10, 0, -1)]


# ------------------------------------------------------------ the command

def _folder(root, size=8, test=True):
    rng = np.random.RandomState(0)
    for split in ('train', 'test') if test else ('train',):
        for k, name in enumerate(CLASSES):
            os.makedirs(root / split / name)
            for i in range(3):
                pixels = rng.randint(0, 128, (size, size, 3)) + 100 * k
                Image.fromarray(pixels.astype(np.uint8)).save(
                    root / split / name / ('%d.png' % i))
    return str(root)


def _model(path, model='cnn', size=8, data='unused'):
    lasagne.random.set_rng(np.random.RandomState(0))
    net = build_model(model, len(CLASSES), (3, size, size))
    checkpoint.save(path, net, {
        'model': model, 'classes': CLASSES, 'input_shape': [3, size, size],
        'config': train.default_config(model=model, data=data,
                                       download=False)})
    return str(path)


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp('faith')
    return {'data': _folder(root / 'data'),
            'no_test': _folder(root / 'no_test', test=False),
            'cnn': _model(root / 'cnn.npz'),
            'gcm12': _model(root / 'gcm12.npz', 'gcm', 12),
            'out': str(root / 'out')}


def test_command_writes_tables_curves_and_per_image_numbers(files, capsys):
    code = cli.main(['faithfulness', files['cnn'], '--data', files['data'],
                     '--images', '5', '--steps', '4', '--ig-steps', '2',
                     '--randomisation-images', '2', '--out', files['out']])
    assert code == 0
    for name in ('faithfulness.md', 'faithfulness.csv', 'randomisation.csv',
                 'curves.png', 'curves.pdf', 'per_image.npz'):
        assert os.path.getsize(os.path.join(files['out'], name)) > 0
    # drawn without pyplot, whose backend and figures are the caller's
    assert 'matplotlib.pyplot' not in sys.modules
    with open(os.path.join(files['out'], 'faithfulness.csv')) as f:
        rows = list(csv.DictReader(f))
    assert [r['method'] for r in rows] == list(attr.ANY_METHODS
                                               + attr.CNN_METHODS)
    assert all(r['images'] == '5' for r in rows)
    with np.load(os.path.join(files['out'], 'per_image.npz'),
                 allow_pickle=False) as f:
        assert f['cnn__cam__deletion'].shape == (5, 5)
        assert f['cnn__grad-cam__road_morf'].shape == (5, 9)
        assert f['cnn__random__randomisation'].shape == (11, 2)
        correct = f['cnn__correct']
        assert len(f['image_index']) == 5
    text = open(os.path.join(files['out'], 'faithfulness.md')).read()
    assert '- cnn: %d of the 5 images classified correctly' % correct.sum() \
        in text
    assert '| cnn | grad-cam |' in text


@pytest.mark.parametrize('args, message', [
    (['{cnn}', '--methods', 'ccm'], "method 'ccm' needs a GCM model"),
    (['{cnn}', '--methods', 'gradient', 'sharpness'],
     "unknown method 'sharpness'"),
    (['{gcm12}'], 'the test images are (3, 8, 8) (channels, rows, cols), '
                  'the model takes (3, 12, 12)'),
    (['{cnn}', '--data', '{no_test}'], 'no folder'),
])
def test_bad_input_gives_one_line_errors(files, capsys, args, message):
    args = [a.format(**files) for a in args]
    if '--data' not in args:
        args += ['--data', files['data']]
    code = cli.main(['faithfulness'] + args + ['--out', files['out'] + '-x'])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith('error: ') and err.count('\n') == 1, err
    assert message in err
    assert not os.path.exists(files['out'] + '-x')


def test_results_without_the_randomisation_check(tmp_path):
    rng = np.random.RandomState(0)
    curves = {k: rng.uniform(size=(4, 5)) for k in ('deletion', 'insertion')}
    curves.update(deletion_auc=faith.area(curves['deletion']),
                  insertion_auc=faith.area(curves['insertion']),
                  road_morf=rng.uniform(size=(4, 9)) < 0.5,
                  road_lerf=rng.uniform(size=(4, 9)) < 0.5)
    results = {'m': {'methods': ['random'], 'random': curves,
                     'predicted': np.zeros(4, np.int32),
                     'targets': np.zeros(4, np.int32),
                     'correct': np.array([1, 0, 1, 1], bool),
                     'seconds': {}, 'total_seconds': 1.0}}
    settings = dict(faith_run.DEFAULTS, command='by hand', images=4,
                    data='made up', randomisation_images=0)
    faith_run.write_results(str(tmp_path), np.arange(4), np.zeros(4), results,
                        settings)
    with open(tmp_path / 'faithfulness.csv') as f:
        row = next(csv.DictReader(f))
    assert row['rand_all mean'] == '' and row['rand_all se'] == ''
    assert float(row['deletion_auc mean']) == pytest.approx(
        curves['deletion_auc'].mean())
    text = (tmp_path / 'faithfulness.md').read_text()
    assert 'Randomisation: skipped' in text
    assert '- m: 3 of the 4 images classified correctly' in text


def test_results_folder_is_the_default_out():
    def out(*argv):
        return cli.default_outs(cli.build_parser().parse_args(argv)).out
    assert out('faithfulness', 'm.npz') == os.path.join('results',
                                                        'faithfulness')
    assert out('--results', 'R', 'faithfulness', 'm.npz') == \
        os.path.join('R', 'faithfulness')
    assert out('--results', 'R', 'faithfulness', 'm.npz', '--out', 'O') == 'O'
    assert out('--results', 'R', 'demo') == os.path.join('R', 'demo')
