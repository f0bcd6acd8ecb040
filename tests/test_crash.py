"""Issue 12: a training process killed with SIGKILL, in the middle of an
epoch or of writing its checkpoint, resumes from its last finished epoch to
the weights of an uninterrupted run, bit for bit; a run whose loss or
weights become NaN or infinite stops with one line and keeps its last good
checkpoint, and no model with a NaN or infinite value is ever written."""
import csv
import glob
import json
import os
import subprocess
import sys
import time
import zipfile

import lasagne
import numpy as np
import pytest

from gcm_lasagne import checkpoint, cli, runfolder, train
from gcm_lasagne.models import build_model
from test_bad_inputs import image_folder, training_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# 120 training images in batches of 2: an epoch takes about a second here,
# long enough to kill a process in its middle
RECIPE = ['--epochs', '3', '--batch-size', '2', '--lr-steps', '2',
          '--learning-rate', '0.05', '--pad', '1']


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('crash') / 'data')
    image_folder(root, train=40, test=4, size=(16, 16))
    return root


def _command(data, out, *extra):
    return ([sys.executable, os.path.join(ROOT, 'run_cifar10.py'), 'train',
             '--data', data, '--out', out] + RECIPE + list(extra))


def _epochs_logged(out):
    """{epoch: seconds} of the rows of log.csv complete so far."""
    try:
        with open(os.path.join(out, 'log.csv')) as f:
            return {int(r['epoch']): float(r['seconds'])
                    for r in csv.DictReader(f)}
    except (OSError, ValueError, TypeError):  # not there, or half a row
        return {}


def _wait_for(condition, child, timeout=300):
    deadline = time.time() + timeout
    while not condition():
        assert child.poll() is None, child.communicate()
        assert time.time() < deadline
        time.sleep(0.01)


def _temporary_files(out):
    return glob.glob(os.path.join(out, '*.tmp.npz'))


def test_sigkill_mid_epoch_and_mid_write_resume_bit_for_bit(data, tmp_path):
    reference, out = str(tmp_path / 'reference'), str(tmp_path / 'run')
    ckpt = os.path.join(out, 'checkpoint.npz')
    done = subprocess.run(_command(data, reference), capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr

    # killed a third of the way into epoch 2 (as long as epoch 1, give or
    # take its warm-up)
    child = subprocess.Popen(_command(data, out), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: os.path.exists(ckpt), child)
    time.sleep(_epochs_logged(out)[1] / 3)
    child.kill()
    child.communicate()
    assert int(checkpoint.read(ckpt)[2]['epoch']) == 1
    assert list(_epochs_logged(out)) == [1]  # epoch 2 had not ended
    assert _temporary_files(out) == []       # nor was it being saved

    # resumed, killed after the checkpoint of epoch 2 is written to its
    # temporary file and before it replaces the one of epoch 1: the hook
    # in checkpoint.save holds the writer there for 5 s
    child = subprocess.Popen(
        _command(data, out, '--resume'), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, GCM_TEST_PAUSE_BEFORE_RENAME='5'))
    _wait_for(lambda: 2 in _epochs_logged(out) and any(
        zipfile.is_zipfile(p) for p in _temporary_files(out)), child)
    child.kill()
    stdout, _ = child.communicate()
    assert 'resuming %s after epoch 1' % out in stdout
    assert int(checkpoint.read(ckpt)[2]['epoch']) == 1
    assert len(_temporary_files(out)) == 1
    # complete: only the rename was left
    checkpoint.read(_temporary_files(out)[0])

    done = subprocess.run(_command(data, out, '--resume'),
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert 'resuming %s after epoch 1' % out in done.stdout
    assert _temporary_files(out) == []
    assert list(_epochs_logged(out)) == [1, 2, 3]
    for name in ('model.npz', 'checkpoint.npz'):
        meta_a, values_a, arrays_a = checkpoint.read(
            os.path.join(reference, name))
        meta_b, values_b, arrays_b = checkpoint.read(os.path.join(out, name))
        assert meta_a == meta_b
        assert len(values_a) == len(values_b) > 0
        for a, b in zip(values_a, values_b):
            np.testing.assert_array_equal(a, b)
        assert sorted(arrays_a) == sorted(arrays_b)
        for key in arrays_a:
            np.testing.assert_array_equal(arrays_a[key], arrays_b[key])


# ------------------------------------------------ stopping on NaN or inf

def _nan_loss(compile_train):
    def compile_with_nan_loss(net, config):
        fn, lr, velocities = compile_train(net, config)
        return (lambda X, y: (np.float32(np.nan), fn(X, y)[1])), lr, velocities
    return compile_with_nan_loss


# a NaN in the weights: tests/test_train.py::test_nan_loss_stops...
@pytest.mark.parametrize('breaks, message', [
    (lambda mp: mp.setattr(train, 'compile_train',
                           _nan_loss(train.compile_train)),
     'the training loss became nan in epoch 2'),
    (lambda mp: mp.setattr(train, 'evaluate',
                           lambda fn, X, y: (np.inf, np.zeros(len(y)))),
     'the test loss became inf in epoch 2'),
], ids=['training loss', 'test loss'])
def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(
        breaks, message, tmp_path, monkeypatch, capfd):
    data, out = str(tmp_path / 'data'), str(tmp_path / 'run')
    image_folder(data)
    training_checkpoint(out, data)
    with open(os.path.join(out, 'checkpoint.npz'), 'rb') as f:
        before = f.read()
    breaks(monkeypatch)
    assert cli.main(['train', '--data', data, '--out', out, '--resume',
                     '--epochs', '2']) == 1
    err = capfd.readouterr().err
    assert err.count('\n') == 1 and message in err
    assert 'the checkpoint of epoch 1 is kept' in err
    with open(os.path.join(out, 'checkpoint.npz'), 'rb') as f:
        assert f.read() == before
    assert not os.path.exists(os.path.join(out, 'model.npz'))
    assert _epochs_logged(out) == {}


def test_no_model_with_nan_or_inf_is_written(tmp_path):
    net = build_model('gcm', 3, (3, 8, 8))
    meta = {'model': 'gcm', 'classes': ['a', 'b', 'c'],
            'input_shape': [3, 8, 8]}
    params = lasagne.layers.get_all_params(net['prob'])
    params[5].set_value(np.full_like(params[5].get_value(), np.inf))
    with pytest.raises(checkpoint.CheckpointError, match='arr_5 holds NaN'):
        checkpoint.save(str(tmp_path / 'model.npz'), net, meta)
    params[5].set_value(np.zeros_like(params[5].get_value()))
    with pytest.raises(checkpoint.CheckpointError, match='velocity_0'):
        checkpoint.save(str(tmp_path / 'model.npz'), net, meta,
                        velocity_0=np.array([np.nan], np.float32))
    assert os.listdir(str(tmp_path)) == []


def test_float64_model_files_load_as_float32(tmp_path):
    """The README's promise: float64 arrays of the right shapes are
    converted, the network gets float32 equal to their rounding."""
    net = build_model('gcm', 3, (3, 8, 8))
    values = [v.astype(np.float64) + 1e-9 for v in
              lasagne.layers.get_all_param_values(net['prob'])]
    meta = {'model': 'gcm', 'classes': ['a', 'b', 'c'],
            'input_shape': [3, 8, 8]}
    path = str(tmp_path / 'model.npz')
    np.savez(path, meta=np.array(json.dumps(meta)),
             **{'arr_%d' % i: v for i, v in enumerate(values)})
    loaded, _, _ = checkpoint.load(path)
    got = lasagne.layers.get_all_param_values(loaded['prob'])
    assert all(g.dtype == np.float32 for g in got)
    for g, v in zip(got, values):
        np.testing.assert_array_equal(g, v.astype(np.float32))


def test_resume_drops_log_rows_it_cannot_read(tmp_path):
    """A log.csv edited by hand (a junk row, an extra column) does not stop
    a resume: rows after the checkpoint and unreadable ones are dropped."""
    path = str(tmp_path / 'log.csv')
    with open(path, 'w') as f:
        f.write('epoch,train_loss,note\n1,0.5,good\nbest,0.1,\n2,0.4,\n')
    runfolder.trim_log(path, 1)
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert [(r['epoch'], r['train_loss']) for r in rows] == [('1', '0.5')]
    assert list(rows[0]) == runfolder.LOG_FIELDS
