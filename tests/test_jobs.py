"""`jobs` lists the train commands `reproduce` would run, and a job that
starts one of them again (`train --auto-resume`) starts, continues or
skips its run as the run folder asks; `--resume` and a plain `train` keep
refusing what they refused."""
import json
import os
import shlex
import subprocess
import sys

import numpy as np
import pytest

from gcm_lasagne import cli, jobs, runfolder
from test_bad_inputs import image_folder, training_checkpoint
from test_run_folders import run, snapshot
from test_train import TINY, folder  # noqa: F401 (the fixture)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _parse(*argv):
    return cli.build_parser().parse_args(list(argv))


@pytest.mark.parametrize('options', [
    [],
    ['--seeds', '3', '--data', 'my images/cifar 10', '--epochs', '2',
     '--batch-size', '8', '--lr-steps', '1', '--learning-rate', '0.05',
     '--pad', '1', '--train-subset', '300'],
    ['--seeds', '2', '--recipe', 'he2016', '--weight-decay', '1e-4',
     '--no-flip', '--lr-steps', '--validation', '500', '--momentum', '0.5',
     '--lr-factor', '0.2', '--image-size', '16', '16', '--no-download',
     '--data-dir', 'elsewhere', '--data', 'cifar10'],
], ids=['defaults', 'a small recipe', 'every option'])
def test_the_lines_are_the_runs_reproduce_trains(options, capsys):
    runs = 'the runs'
    assert cli.main(['--runs', runs, 'jobs'] + options) == 0
    lines = capsys.readouterr().out.splitlines()
    reproduce = _parse('--runs', runs, 'reproduce', *options)
    expected = [(os.path.join(runs, cli.run_name(model, seed)),
                 cli.recipe(reproduce, model=model, seed=seed))
                for seed in range(1, reproduce.seeds + 1)
                for model in cli.PAPER_MODELS]
    got = []
    for line in lines:
        args = _parse(*shlex.split(line))
        assert args.command == 'train' and args.auto_resume
        got.append((args.out, cli.recipe(args)))
    assert got == expected
    assert len(lines) == 3 * reproduce.seeds


def test_jobs_takes_every_option_of_reproduce():
    """An option added to reproduce and not to jobs would make the job
    array train something else."""
    def options(name):
        return {s for a in jobs.subcommand(cli.build_parser(), name)._actions
                for s in a.option_strings}
    assert options('jobs') == options('reproduce')


def test_a_bad_recipe_is_refused_before_any_line():
    done = subprocess.run([sys.executable, 'run_cifar10.py', 'jobs',
                           '--seeds', '2', '--lr-steps', '200'],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 1 and done.stdout == ''
    assert done.stderr.startswith('error: --lr-steps 200')
    assert done.stderr.count('\n') == 1


# ---------------------------------------------------- what a job finds

@pytest.fixture
def data(tmp_path):
    path = str(tmp_path / 'data')
    image_folder(path)
    return path


def test_auto_mode_of_each_kind_of_folder(data, tmp_path):
    out, finished = str(tmp_path / 'run'), str(tmp_path / 'finished')
    assert jobs.auto_mode(out, {}) == 'start'  # no folder
    os.makedirs(finished)
    assert jobs.auto_mode(finished, {}) == 'start'  # an empty one
    training_checkpoint(out, data)  # epoch 1 of 2
    assert jobs.auto_mode(out, {}) == 'resume'
    _write_metrics(out)  # as if a lengthened run had kept an older one
    assert jobs.auto_mode(out, {}) == 'resume'
    os.rmdir(finished)
    training_checkpoint(finished, data, epoch=np.array(2))  # all epochs
    assert jobs.auto_mode(finished, {}) == 'resume'  # no metrics yet
    _write_metrics(finished)
    assert jobs.auto_mode(finished, {}) == 'done'
    assert jobs.auto_mode(finished, {'seed': 1, 'epochs': 2}) == 'done'
    assert jobs.auto_mode(finished, {'epochs': 3}) == 'resume'  # lengthened
    with pytest.raises(runfolder.RunFolderError, match='--seed 2: the run'):
        jobs.auto_mode(finished, {'seed': 2})
    with pytest.raises(runfolder.RunFolderError, match='only keep or'):
        jobs.auto_mode(finished, {'epochs': 1})


def _write_metrics(out):
    with open(os.path.join(out, 'metrics.json'), 'w') as f:
        json.dump({}, f)


def test_auto_resume_starts_then_says_done_and_touches_nothing(
        folder, tmp_path, capsys):
    out = str(tmp_path / 'run')
    train = ['train', '--auto-resume', '--data', folder, '--out', out] + TINY
    status, stdout, err = run(capsys, *train)
    assert status == 0, err
    assert 'resuming' not in stdout and 'test accuracy' in stdout
    before = snapshot(out)
    stamps = {n: os.stat(os.path.join(out, n)).st_mtime_ns for n in before}
    status, stdout, err = run(capsys, *train)
    assert (status, stdout, err) == (0, 'the run: done already (%s)\n' % out,
                                     '')
    assert snapshot(out) == before
    assert {n: os.stat(os.path.join(out, n)).st_mtime_ns
            for n in before} == stamps
    status, _, err = run(capsys, *(train + ['--seed', '2']))
    assert status == 1 and err.count('\n') == 1
    assert '--seed 2: the run in %s was trained with 1' % out in err


def test_the_explicit_modes_still_refuse(folder, tmp_path, capsys):
    empty = str(tmp_path / 'empty')
    os.makedirs(empty)
    status, _, err = run(capsys, 'train', '--resume', '--data', folder,
                         '--out', empty)
    assert status == 1 and 'nothing to resume' in err
    for other in ('--resume', '--overwrite'):
        status, _, err = run(capsys, 'train', '--auto-resume', other,
                             '--out', empty)
        assert status == 1 and err.count('\n') == 1
        assert 'give one of them' in err and other in err
    assert os.listdir(empty) == []
