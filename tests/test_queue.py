"""runs-in-progress/queue.sh, the long runs' queue, on a throw-away copy of
the project (its own git repository, so that its handovers commit there):
it starts a new run, resumes one handed over on another machine (and
completes one handed over after its last epoch), writes
each run's notes, hands each over when it ends, stops at a run that fails,
and skips finished runs when started again."""
import os
import shutil
import subprocess
import tarfile

import numpy as np
import pytest

from gcm_lasagne import fastconv
from test_bad_inputs import image_folder, training_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIT_ENV = {'GIT_AUTHOR_NAME': 'test', 'GIT_AUTHOR_EMAIL': 'test@example.org',
           'GIT_COMMITTER_NAME': 'test',
           'GIT_COMMITTER_EMAIL': 'test@example.org'}


def git(repo, *args):
    return subprocess.run(['git', '-C', repo] + list(args), check=True,
                          capture_output=True, text=True,
                          env=dict(os.environ, **GIT_ENV)).stdout


@pytest.fixture
def project(tmp_path):
    """The scripts copied, the code and the environment linked."""
    repo = str(tmp_path / 'project')
    os.makedirs(os.path.join(repo, 'runs-in-progress'))
    os.makedirs(os.path.join(repo, 'benchmarks'))
    for name in ('queue.sh', 'handover.sh'):
        shutil.copy(os.path.join(ROOT, 'runs-in-progress', name),
                    os.path.join(repo, 'runs-in-progress'))
    shutil.copy(os.path.join(ROOT, 'benchmarks', 'machine.py'),
                os.path.join(repo, 'benchmarks'))
    for name in ('.venv', 'run_cifar10.py', 'gcm_lasagne'):
        os.symlink(os.path.join(ROOT, name), os.path.join(repo, name))
    git(repo, 'init', '-q')
    return repo


def queue(project, tmp_path, lines):
    path = str(tmp_path / 'queue.txt')
    with open(path, 'w') as f:
        f.write('# a comment\n\n' + ''.join(line + '\n' for line in lines))
    env = dict(os.environ, RUNS=str(tmp_path / 'runs'),
               ARCHIVE=str(tmp_path / 'cifar10-jpeg.tar.gz'),
               DATA=str(tmp_path / 'data'), CODE=str(tmp_path / 'code'),
               QUEUE=path, **GIT_ENV)
    return subprocess.run(['bash', os.path.join(project, 'runs-in-progress',
                                                'queue.sh')],
                          env=env, capture_output=True, text=True,
                          timeout=900)


def log_rows(run):
    with open(os.path.join(run, 'log.csv')) as f:
        return len(f.readlines()) - 1


def test_the_queue_starts_resumes_hands_over_stops_and_skips(project,
                                                              tmp_path):
    # the data comes packed, as ../shared has it; train unpacks it
    data = str(tmp_path / 'images' / 'cifar10-jpeg')
    image_folder(data)
    archive = str(tmp_path / 'cifar10-jpeg.tar.gz')
    with tarfile.open(archive, 'w:gz') as tar:
        tar.add(data, arcname='cifar10-jpeg')
    # handed over on another machine: 'handed' after epoch 1 of 2, 'ended'
    # after its last epoch, before it was evaluated
    handed = os.path.join(project, 'runs-in-progress', 'handed')
    ended = os.path.join(project, 'runs-in-progress', 'ended')
    for folder, epoch in ((handed, 1), (ended, 2)):
        training_checkpoint(folder, data, epoch=np.array(epoch))
        with open(os.path.join(folder, 'config.json'), 'w') as f:
            f.write('{}\n')
        with open(os.path.join(folder, 'log.csv'), 'w') as f:
            f.write('epoch,learning_rate,train_loss,train_acc,eval_loss,'
                    'eval_acc,seconds\n' + ''.join(
                        '%d,0.1,1.1,0.3,1.1,0.3,1.0\n' % (e + 1)
                        for e in range(epoch)))
    git(project, 'add', '-A')
    git(project, 'commit', '-q', '-m', 'the project')
    commit = git(project, 'rev-parse', '--short', 'HEAD').strip()

    runs = str(tmp_path / 'runs')
    done = queue(project, tmp_path, [
        'fresh | --model gcm --epochs 1 --batch-size 4 | 1 s an epoch',
        'handed | --model gcm | -',
        'ended | --model gcm | -',
        'broken | --model nosuch | -',
        'never | --model gcm --epochs 1 | -'])
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.splitlines() == [
        'fresh finished: export it as runs-in-progress/README.md says',
        'handed finished: export it as runs-in-progress/README.md says',
        'ended finished: export it as runs-in-progress/README.md says',
        'broken stopped (exit 2) before its last epoch: the queue stops']
    assert log_rows(os.path.join(runs, 'fresh')) == 1
    assert log_rows(os.path.join(runs, 'handed')) == 2  # resumed, not redone
    assert log_rows(os.path.join(runs, 'ended')) == 2  # evaluated only
    for name in ('fresh', 'handed', 'ended'):
        assert os.path.exists(os.path.join(runs, name, 'model.npz'))
        assert os.path.exists(os.path.join(runs, name, 'metrics.json'))
    assert not os.path.exists(os.path.join(runs, 'never'))
    # the archive unpacked where DATA says
    assert os.path.exists(os.path.join(str(tmp_path / 'data'),
                                       'cifar10-jpeg', '.unpacked-from'))

    notes = open(os.path.join(project, 'runs-in-progress', 'fresh',
                              'NOTES.md')).read()
    assert notes.startswith(
        '# fresh\n\n    run_cifar10.py train --model gcm --epochs 1 '
        '--batch-size 4 \\\n        --data %s --data-dir %s --out %s/fresh\n\n'
        '## Estimate before starting\n\n1 s an epoch.\n\n'
        '## Where each epoch ran\n\n- Started: '
        % (archive, tmp_path / 'data', runs))
    assert notes.rstrip().endswith(
        'from a checkout of commit %s (queue.sh).' % commit)
    assert 'cores' in notes
    convolutions = ('Winograd stride-1 3x3 convolutions'
                    if fastconv.winograd_enabled()
                    else 'direct convolutions (GCM_WINOGRAD=0)')
    assert ', %s, from a checkout' % convolutions in notes
    notes = open(os.path.join(handed, 'NOTES.md')).read()
    assert "- Resumed after epoch 1: " in notes
    # each finished run was handed over: its last checkpoint committed
    history = git(project, 'log', '--format=%s')
    assert 'runs-in-progress: fresh at epoch 1 ' in history
    assert 'runs-in-progress: handed at epoch 2 ' in history
    assert git(project, 'ls-files', 'runs-in-progress/fresh').split() == [
        'runs-in-progress/fresh/NOTES.md',
        'runs-in-progress/fresh/checkpoint.npz',
        'runs-in-progress/fresh/config.json',
        'runs-in-progress/fresh/log.csv']

    # started again: what finished is skipped, nothing is written
    before = git(project, 'rev-parse', 'HEAD')
    again = queue(project, tmp_path, ['fresh | --model gcm --epochs 1 | -',
                                      'handed | --model gcm | -'])
    assert (again.returncode, again.stdout) == (0, '')
    assert git(project, 'rev-parse', 'HEAD') == before
    # only the notes of the run that failed, left for a person to read
    assert git(project, 'status', '--porcelain') == (
        '?? runs-in-progress/broken/\n')


def test_a_second_queue_is_refused_while_a_run_trains(project, tmp_path):
    os.makedirs(str(tmp_path / 'runs'))
    with open(str(tmp_path / 'runs' / 'current.pid'), 'w') as f:
        f.write('%d\n' % os.getpid())  # alive: this test
    with open(str(tmp_path / 'runs' / 'current.name'), 'w') as f:
        f.write('gcm-seed2\n')
    done = queue(project, tmp_path, ['fresh | --model gcm --epochs 1 | -'])
    assert done.returncode == 1
    assert done.stderr == ('a run trains already (pid %d, gcm-seed2): one at '
                           'a time\n' % os.getpid())
    assert not os.path.exists(str(tmp_path / 'code'))


def test_an_environment_that_cannot_run_the_probes_is_one_line(project,
                                                               tmp_path):
    os.remove(os.path.join(project, 'benchmarks', 'machine.py'))
    done = queue(project, tmp_path, ['fresh | --model gcm --epochs 1 | -'])
    assert done.returncode == 1
    assert done.stderr == ('%s/.venv/bin/python cannot run '
                           'benchmarks/machine.py: set up .venv as README.md '
                           'says\n' % project)
    assert not os.path.exists(str(tmp_path / 'code'))

    # a checkout without the package
    shutil.copy(os.path.join(ROOT, 'benchmarks', 'machine.py'),
                os.path.join(project, 'benchmarks'))
    os.remove(os.path.join(project, 'gcm_lasagne'))
    git(project, 'add', '-A')
    git(project, 'commit', '-q', '-m', 'the project without its package')
    os.makedirs(str(tmp_path / 'data' / 'cifar10-jpeg'))
    done = queue(project, tmp_path, ['fresh | --model gcm --epochs 1 | -'])
    assert done.returncode == 1
    assert done.stderr == ('%s/.venv/bin/python cannot import gcm_lasagne '
                           'from the checkout %s: set up .venv as README.md '
                           'says\n' % (project, tmp_path / 'code'))
    assert not os.path.exists(str(tmp_path / 'runs' / 'fresh'))
