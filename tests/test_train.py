"""Issue 3: the recipe, the training loop and the command line, on a tiny
synthetic image-folder data set (no download, no ../shared)."""
import csv
import fcntl
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from gcm_lasagne import cli as run_cifar10
from gcm_lasagne import checkpoint, paper, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ('circle', 'cross', 'square')
TINY = ['--epochs', '2', '--batch-size', '8', '--lr-steps', '1',
        '--learning-rate', '0.05', '--pad', '1']


def _draw(kind, rng):
    img = rng.uniform(0, 60, (8, 8, 3))
    r, c = np.mgrid[:8, :8]
    mask = {'circle': (r - 3.5) ** 2 + (c - 3.5) ** 2 < 8,
            'cross': (r == 3) | (c == 4),
            'square': (r > 1) & (r < 6) & (c > 1) & (c < 6)}[kind]
    img[mask] += 180
    return Image.fromarray(img.astype(np.uint8))


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    """train/ with 12 images a class, test/ with 4, 8x8 RGB PNGs."""
    root = tmp_path_factory.mktemp('shapes')
    rng = np.random.RandomState(0)
    for split, n in (('train', 12), ('test', 4)):
        for kind in CLASSES:
            os.makedirs(root / split / kind)
            for i in range(n):
                _draw(kind, rng).save(root / split / kind / ('%d.png' % i))
    return str(root)


def cli(*args):
    """The real command line, in a child process."""
    return subprocess.run([sys.executable, 'run_cifar10.py'] + list(args),
                          cwd=ROOT, capture_output=True, text=True)


def test_learning_rate_schedule_of_table2():
    config = train.default_config()
    rates = {e: train.learning_rate(config, e) for e in range(1, 181)}
    assert {rates[e] for e in range(1, 101)} == {0.1}
    assert {round(rates[e], 10) for e in range(101, 151)} == {0.01}
    assert {round(rates[e], 10) for e in range(151, 181)} == {0.001}
    assert config['epochs'] == 180 and config['batch_size'] == 128
    assert config['momentum'] == 0.9 and config['weight_decay'] == 0
    for key, value in paper.TABLE2.items():
        assert config[key] == (list(value) if key == 'lr_steps' else value)


def test_two_epochs_equal_one_plus_resume_plus_one(folder, tmp_path):
    straight, split = str(tmp_path / 'straight'), str(tmp_path / 'split')
    done = cli('train', '--data', folder, '--out', straight, *TINY)
    assert done.returncode == 0, done.stderr
    assert 'test accuracy' in done.stdout
    for name in ('config.json', 'log.csv', 'checkpoint.npz', 'model.npz',
                 'metrics.json'):
        assert os.path.exists(os.path.join(straight, name)), name
    with open(os.path.join(straight, 'log.csv')) as f:
        log = list(csv.DictReader(f))
    assert [r['epoch'] for r in log] == ['1', '2']
    assert [float(r['learning_rate']) for r in log] == pytest.approx(
        [0.05, 0.005])
    with open(os.path.join(straight, 'metrics.json')) as f:
        metrics = json.load(f)
    assert metrics['classes'] == list(CLASSES)
    assert np.sum(metrics['confusion_matrix']) == 12

    first = cli('train', '--data', folder, '--out', split,
                *(TINY[:1] + ['1'] + TINY[2:]))
    assert first.returncode == 0, first.stderr
    again = cli('train', '--data', folder, '--out', split, *TINY)
    assert again.returncode == 1 and 'already holds a run' in again.stderr
    resumed = cli('train', '--data', folder, '--out', split, '--resume',
                  *TINY)
    assert resumed.returncode == 0, resumed.stderr
    assert 'resuming' in resumed.stdout

    _, a, _ = checkpoint.read(os.path.join(straight, 'model.npz'))
    _, b, _ = checkpoint.read(os.path.join(split, 'model.npz'))
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    with open(os.path.join(split, 'log.csv')) as f:
        assert [r['epoch'] for r in csv.DictReader(f)] == ['1', '2']

    ev = cli('evaluate', os.path.join(straight, 'model.npz'))
    assert ev.returncode == 0, ev.stderr
    assert 'confusion matrix' in ev.stdout
    assert '%.2f%%' % (100 * metrics['accuracy']) in ev.stdout


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(folder, tmp_path,
                                                           monkeypatch,
                                                           capsys):
    out = str(tmp_path / 'run')
    args = ['train', '--model', 'cnn', '--data', folder, '--out', out] + TINY
    assert run_cifar10.main(args[:-len(TINY)] + TINY[:1] + ['1']
                            + TINY[2:]) == 0
    ckpt = os.path.join(out, 'checkpoint.npz')
    with open(ckpt, 'rb') as f:
        before = f.read()
    monkeypatch.setattr(train, 'learning_rate', lambda config, epoch: np.nan)
    assert run_cifar10.main(args + ['--resume']) == 1
    err = capsys.readouterr().err
    # the loss of the first step is computed before its NaN update
    assert 'became NaN or infinite in epoch 2' in err
    assert 'epoch 1 is kept' in err and err.count('\n') == 1
    with open(ckpt, 'rb') as f:
        assert f.read() == before
    with open(os.path.join(out, 'log.csv')) as f:
        assert [r['epoch'] for r in csv.DictReader(f)] == ['1']


def test_cnn_stores_its_pixel_mean(folder, tmp_path):
    out = str(tmp_path / 'cnn')
    assert run_cifar10.main(['train', '--model', 'cnn', '--data', folder,
                             '--out', out] + TINY[:1] + ['1'] + TINY[2:]) == 0
    net, meta, _ = checkpoint.load(os.path.join(out, 'model.npz'))
    from gcm_lasagne import batches, images
    X = images.load_image_folder(folder)['X_train']
    np.testing.assert_allclose(net['centre'].pixel_mean.get_value(),
                               batches.to_float(X).mean(axis=0), atol=1e-6)


@pytest.mark.parametrize('args, message', [
    (['train', '--epochs', '0'], 'positive integer'),
    (['train', '--model', 'resnet'], 'invalid choice'),
    (['frobnicate'], 'invalid choice'),
])
def test_bad_arguments_exit_2_with_one_line(args, message):
    done = cli(*args)
    assert done.returncode == 2
    assert done.stderr.count('\n') == 1 and message in done.stderr


def test_the_bare_command_is_reproduce_and_ends_in_one_line_without_data(
        tmp_path):
    """`python run_cifar10.py`, as the Docker image runs it: Table 2's
    reproduce, which looks for the official archive under data/ and, where
    it cannot be downloaded (here: a proxy on a closed loopback port),
    says so in one line."""
    closed = 'http://127.0.0.1:9'
    env = dict(os.environ, https_proxy=closed, HTTPS_PROXY=closed,
               no_proxy='', NO_PROXY='')
    done = subprocess.run([sys.executable, os.path.join(ROOT, 'run_cifar10.py')],
                          cwd=str(tmp_path), env=env, capture_output=True,
                          text=True)
    assert done.returncode == 1, done.stderr
    assert done.stderr.count('\n') == 1, done.stderr
    assert done.stderr.startswith('error: no CIFAR-10 archive at %s'
                                  % (tmp_path / 'data'))
    assert 'could not be downloaded' in done.stderr
    assert done.stdout.startswith('== gcm, seed 1 -> runs/gcm')
    assert not (tmp_path / 'runs' / 'gcm').exists()  # nothing half made


def test_bad_inputs_give_one_line_errors(tmp_path):
    missing = cli('evaluate', str(tmp_path / 'nothing.npz'))
    assert missing.returncode == 1
    assert missing.stderr.startswith('error: no model file')
    junk = tmp_path / 'junk.npz'
    junk.write_bytes(b'not a zip')
    bad = cli('evaluate', str(junk))
    assert bad.returncode == 1 and 'not a gcm-lasagne model' in bad.stderr
    nodata = cli('train', '--data-dir', str(tmp_path), '--no-download')
    assert nodata.returncode == 1 and nodata.stderr.count('\n') == 1
    assert str(tmp_path) in nodata.stderr


def test_params_only_table3():
    done = cli('table3', '--params-only')
    assert done.returncode == 0, done.stderr
    for model in ('gcm', 'gcm-clip', 'cnn'):
        assert '| %s | %d |' % (model, paper.PARAMS[model]) in done.stdout


def test_ctrl_c_exits_cleanly_and_the_run_resumes(folder, tmp_path):
    import signal
    import time
    out = str(tmp_path / 'run')
    child = subprocess.Popen(
        [sys.executable, 'run_cifar10.py', 'train', '--data', folder, '--out',
         out, '--epochs', '1000', '--batch-size', '8', '--pad', '1'],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ckpt = os.path.join(out, 'checkpoint.npz')
    deadline = time.time() + 300
    while not os.path.exists(ckpt) and time.time() < deadline:
        time.sleep(0.2)
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 130
    assert 'interrupted' in err and 'Traceback' not in err
    _, _, arrays = checkpoint.read(ckpt)  # whole, not half written
    stopped = int(arrays['epoch'])
    assert 1 <= stopped < 1000
    resumed = cli('train', '--data', folder, '--out', out, '--resume',
                  '--epochs', str(stopped + 1))
    assert resumed.returncode == 0, resumed.stderr
    with open(os.path.join(out, 'log.csv')) as f:
        epochs = [int(r['epoch']) for r in csv.DictReader(f)]
    assert epochs == list(range(1, stopped + 2))


def test_ctrl_c_during_a_checkpoint_write_waits_for_the_file(tmp_path,
                                                            monkeypatch):
    import signal
    import lasagne
    from gcm_lasagne.models import build_model
    net = build_model('gcm-basic', 2, (3, 4, 4))
    path = str(tmp_path / 'model.npz')
    savez = np.savez

    def interrupted_savez(f, **arrays):
        os.kill(os.getpid(), signal.SIGINT)  # arrives mid-write
        savez(f, **arrays)
    monkeypatch.setattr(np, 'savez', interrupted_savez)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(path, net, {'model': 'gcm-basic', 'classes': ['a', 'b'],
                                    'input_shape': [3, 4, 4]})
    _, values, _ = checkpoint.read(path)  # complete, and readable
    assert len(values) == len(
        lasagne.layers.get_all_param_values(net['prob']))
    assert [p for p in os.listdir(tmp_path) if p.endswith('.tmp.npz')] == []
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_test_data_of_a_model_reads_no_training_image(folder, tmp_path):
    root = tmp_path / 'copy'
    shutil.copytree(folder, root)
    (root / 'train' / 'circle' / '0.png').write_bytes(b'broken')
    meta = {'classes': list(CLASSES), 'input_shape': [3, 8, 8],
            'config': train.default_config(data=str(root))}
    X, y = train.load_test_data(meta)
    assert X.shape == (12, 3, 8, 8)
    np.testing.assert_array_equal(y, np.repeat([0, 1, 2], 4))
    with pytest.raises(train.DataError, match='not the model'):
        train.load_test_data(dict(meta, classes=['a', 'b', 'c']))


def test_a_run_folder_in_use_is_refused_and_left_alone(folder, tmp_path):
    out = tmp_path / 'run'
    out.mkdir()
    (out / 'epoch.tmp.npz').write_bytes(b'the other process is writing')
    with open(str(out / '.lock'), 'a') as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        config = train.default_config(data=folder, epochs=1, batch_size=8)
        with pytest.raises(train.TrainingError, match='in use'):
            train.train(config, str(out))
        r = cli('train', '--data', folder, '--out', str(out), *TINY)
    assert r.returncode == 1 and 'in use' in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert (out / 'epoch.tmp.npz').exists()
    assert sorted(os.listdir(str(out))) == ['.lock', 'epoch.tmp.npz']


def test_seeds_differ_and_a_seed_repeats(folder, tmp_path):
    """Runs of different seeds start from different weights and end with
    different ones; the same seed twice gives the same weights bit for
    bit (what Table 3's spread over seeds rests on)."""
    import lasagne
    from gcm_lasagne.models import build_model

    def initial(seed):
        lasagne.random.set_rng(np.random.RandomState(seed))
        return lasagne.layers.get_all_param_values(
            build_model('gcm', 3, (3, 8, 8))['prob'])

    def final(seed, name):
        out = str(tmp_path / name)
        assert run_cifar10.main(['train', '--data', folder, '--out', out,
                                 '--seed', str(seed)] + TINY) == 0
        return checkpoint.read(os.path.join(out, 'model.npz'))[1]

    for same in (False, True):
        a, b = initial(1), initial(1 if same else 2)
        assert all(np.array_equal(x, y) for x, y in zip(a, b)) == same
    one, two, again = final(1, 's1'), final(2, 's2'), final(1, 's1again')
    assert not any(np.array_equal(x, y) for x, y in zip(one, two)
                   if x.size > 1 and x.any())
    assert all(np.array_equal(x, y) for x, y in zip(one, again))
