"""SIGTERM (a scheduler's preemption, requeue or time limit; `kill`;
`docker stop`) stops a training run between two steps with status 143 and
one line saying what is kept, never in the middle of a checkpoint write;
`--auto-resume` then starts or continues it, and the run ends with the
weights of an uninterrupted run, bit for bit."""
import os
import signal
import subprocess
import sys
import threading
import zipfile

import numpy as np
import pytest

from gcm_lasagne import checkpoint, stopping
from test_bad_inputs import image_folder
from test_crash import _epochs_logged, _temporary_files, _wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# 120 training images in batches of 1: 120 steps an epoch, so the run
# prints its progress after steps 30, 60 and 90 of each epoch (a line a
# quarter epoch when stdout is not a terminal), the moments the signals
# below are sent at
RECIPE = ['--epochs', '2', '--batch-size', '1', '--lr-steps', '1',
          '--learning-rate', '0.02', '--pad', '1']


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('preemption') / 'data')
    image_folder(root, train=40, test=4)  # 8x8
    return root


def _command(data, out, *extra):
    return ([sys.executable, os.path.join(ROOT, 'run_cifar10.py'), 'train',
             '--auto-resume', '--data', data, '--out', out] + RECIPE
            + list(extra))


def _terminated_at(command, progress, env=None):
    """Run `command`, send it SIGTERM as soon as it prints `progress`;
    (exit status, stdout, stderr)."""
    child = subprocess.Popen(command, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
    printed = []
    for line in child.stdout:
        printed.append(line)
        if line.startswith(progress):
            child.send_signal(signal.SIGTERM)
            break
    stdout, stderr = child.communicate(timeout=300)
    return child.returncode, ''.join(printed) + stdout, _ours(stderr)


def _ours(stderr):
    """stderr less Theano's notes about its compile lock, which it writes
    when the twin below compiles the same function at the same time."""
    return ''.join(line for line in stderr.splitlines(True)
                   if not line.startswith(('INFO (theano', 'WARNING (theano')))


def _same_files(a, b):
    for name in ('model.npz', 'checkpoint.npz'):
        meta_a, values_a, arrays_a = checkpoint.read(os.path.join(a, name))
        meta_b, values_b, arrays_b = checkpoint.read(os.path.join(b, name))
        assert meta_a == meta_b
        assert len(values_a) == len(values_b) > 0
        for x, y in zip(values_a, values_b):
            np.testing.assert_array_equal(x, y)
        assert sorted(arrays_a) == sorted(arrays_b)
        for key in arrays_a:
            np.testing.assert_array_equal(arrays_a[key], arrays_b[key])


def test_sigterm_mid_epoch_then_auto_resume_ends_bit_for_bit(data, tmp_path):
    reference, out = str(tmp_path / 'reference'), str(tmp_path / 'run')
    ckpt = os.path.join(out, 'checkpoint.npz')
    # the uninterrupted twin, beside the rest (the machine has two cores)
    twin = subprocess.Popen(_command(data, reference), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)

    # in the first epoch: nothing to keep, and the next start begins anew
    status, stdout, stderr = _terminated_at(_command(data, out),
                                            'epoch 1  30/120')
    assert status == 143 == stopping.EXIT_STATUS, stderr
    assert stderr.count('\n') == 1 and 'Traceback' not in stderr
    assert stderr.startswith('stopped by SIGTERM in epoch 1 after ')
    assert 'no epoch had finished, so there is no checkpoint' in stderr
    assert not os.path.exists(ckpt) and _epochs_logged(out) == {}

    # in the second: the first epoch's checkpoint is the run's position
    status, stdout, stderr = _terminated_at(_command(data, out),
                                            'epoch 2  30/120')
    assert status == 143, stderr
    assert 'resuming' not in stdout  # started again from nothing
    assert stderr.startswith('stopped by SIGTERM in epoch 2 after ')
    assert stderr.count('\n') == 1
    steps = int(stderr.split(' after ')[1].split(' of ')[0])
    assert 30 <= steps < 120
    assert ('of its 120 steps, which are dropped: the checkpoint of epoch 1 '
            'is kept; continue with --resume or --auto-resume') in stderr
    assert int(checkpoint.read(ckpt)[2]['epoch']) == 1
    assert list(_epochs_logged(out)) == [1]
    assert _temporary_files(out) == []

    done = subprocess.run(_command(data, out), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert 'resuming %s after epoch 1' % out in done.stdout
    assert list(_epochs_logged(out)) == [1, 2]
    _, stderr = twin.communicate(timeout=300)
    assert twin.returncode == 0, stderr
    _same_files(reference, out)


def test_sigterm_during_a_checkpoint_write_lets_it_finish(data, tmp_path):
    """The write completes and replaces the old checkpoint, then the run
    stops before the next epoch: the epoch it saved is kept."""
    out = str(tmp_path / 'run')
    # the hook in checkpoint.write holds the writer 5 s between its
    # complete temporary file and the rename
    child = subprocess.Popen(
        _command(data, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=dict(os.environ, GCM_TEST_PAUSE_BEFORE_RENAME='5'))
    _wait_for(lambda: 1 in _epochs_logged(out) and any(
        zipfile.is_zipfile(p) for p in _temporary_files(out)), child)
    child.send_signal(signal.SIGTERM)
    _, stderr = child.communicate(timeout=300)
    assert child.returncode == 143, stderr
    assert stderr == ('stopped by SIGTERM before epoch 2: the checkpoint of '
                      'epoch 1 is kept; continue with --resume or '
                      '--auto-resume\n')
    assert int(checkpoint.read(os.path.join(out, 'checkpoint.npz'))[2][
        'epoch']) == 1
    assert _temporary_files(out) == []


def test_the_handler_notes_sigterm_and_is_put_back():
    before = signal.getsignal(signal.SIGTERM)
    with stopping.on_sigterm() as request:
        assert not request
        request.check(3, 10, 20, 2)  # nothing asked: goes on
        os.kill(os.getpid(), signal.SIGTERM)  # the process goes on too
        assert request
        with pytest.raises(stopping.Stopped) as stopped:
            request.check(3, 10, 20, 2)
    assert str(stopped.value) == (
        'stopped by SIGTERM in epoch 3 after 10 of its 20 steps, which are '
        'dropped: the checkpoint of epoch 2 is kept; continue with --resume '
        'or --auto-resume')
    assert signal.getsignal(signal.SIGTERM) is before


def test_outside_the_main_thread_no_handler_is_set():
    before, seen = signal.getsignal(signal.SIGTERM), []

    def train_elsewhere():
        with stopping.on_sigterm() as request:
            seen.append((bool(request), signal.getsignal(signal.SIGTERM)))
    thread = threading.Thread(target=train_elsewhere)
    thread.start()
    thread.join()
    assert seen == [(False, before)]
