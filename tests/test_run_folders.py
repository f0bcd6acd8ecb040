"""Nothing a user has trained is overwritten or misdescribed: a run folder
is never silently replaced, a resume is checked against the run it
resumes, and export never writes over files."""
import csv
import json
import os
import shutil

import pytest

from gcm_lasagne import cli, report, runfolder
from test_train import CLASSES, TINY, folder  # noqa: F401 (the fixture)

ONE = TINY[:1] + ['1'] + TINY[2:]  # the tiny recipe, one epoch


def run(capsys, *args):
    """cli.main in this process: (exit status, stdout, stderr)."""
    status = cli.main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def snapshot(path):
    return {name: open(os.path.join(path, name), 'rb').read()
            for name in sorted(os.listdir(path)) if name != '.lock'}


@pytest.fixture
def finished(folder, tmp_path, capsys):
    """A finished two-epoch run, as a shipped model folder would be after
    export (no checkpoint) and as train leaves it (with one)."""
    out = str(tmp_path / 'run')
    assert run(capsys, 'train', '--data', folder, '--out', out, *TINY)[0] == 0
    return out


def test_a_finished_run_is_not_replaced_without_overwrite(finished, folder,
                                                          tmp_path, capsys):
    shipped = str(tmp_path / 'shipped')
    assert run(capsys, 'export', finished, shipped)[0] == 0
    before = snapshot(shipped)  # model, config, log, metrics; no checkpoint
    status, _, err = run(capsys, 'train', '--data', folder, '--out', shipped,
                         *ONE)
    assert status == 1 and err.count('\n') == 1
    assert 'already holds a run (model.npz, metrics.json, log.csv, ' \
        'config.json)' in err and '--overwrite' in err
    assert snapshot(shipped) == before
    status, out, err = run(capsys, 'train', '--data', folder, '--out',
                           shipped, '--overwrite', *ONE)
    assert status == 0, err
    assert 'replaced the run that was in %s' % shipped in out
    with open(os.path.join(shipped, 'log.csv')) as f:
        assert [r['epoch'] for r in csv.DictReader(f)] == ['1']
    status, _, err = run(capsys, 'train', '--data', folder, '--out', shipped,
                         '--overwrite', '--resume')
    assert status == 1 and 'give one' in err


def test_a_run_stopped_before_its_first_epoch_starts_again(folder, tmp_path,
                                                          capsys):
    out = tmp_path / 'run'
    out.mkdir()
    (out / 'config.json').write_text('{}')
    runfolder.write_log(str(out / 'log.csv'), [], 'w')  # header only
    assert runfolder.work_in(str(out)) == []
    assert run(capsys, 'train', '--data', folder, '--out', str(out),
               *ONE)[0] == 0


def test_export_writes_over_nothing(finished, tmp_path, capsys):
    target = tmp_path / 'target'
    target.mkdir()
    (target / 'log.csv').write_text('mine')
    status, _, err = run(capsys, 'export', finished, str(target))
    assert status == 1 and 'already holds log.csv' in err
    assert (target / 'log.csv').read_text() == 'mine'
    assert sorted(os.listdir(str(target))) == ['log.csv']


@pytest.mark.parametrize('args, message', [
    (['--model', 'cnn'], '--model cnn: the run in {out} was trained with gcm'),
    (['--learning-rate', '0.5'], '--learning-rate 0.5: the run in {out} was '
                                 'trained with 0.05'),
    (['--lr-steps'], '--lr-steps (none): the run in {out} was trained with 1'),
    (['--epochs', '1'], '--epochs 1: the run in {out} has done 2 epochs'),
])
def test_a_resume_that_contradicts_the_run_is_refused(finished, folder,
                                                      capsys, args, message):
    before = snapshot(finished)
    status, _, err = run(capsys, 'train', '--out', finished, '--resume',
                         '--data', folder, *args)
    assert status == 1 and err.count('\n') == 1
    assert message.format(out=finished) in err
    assert snapshot(finished) == before


def test_a_resume_may_lengthen_a_finished_run_and_keeps_its_model(
        finished, folder, capsys):
    status, out, err = run(capsys, 'train', '--out', finished, '--resume',
                           '--data', folder, '--epochs', '3')
    assert status == 0, err
    assert 'lengthening the run from 2 to 3 epochs' in out
    assert "kept the finished run's model-epoch2.npz" in out
    names = os.listdir(finished)
    assert 'model-epoch2.npz' in names and 'metrics-epoch2.json' in names
    with open(os.path.join(finished, 'metrics-epoch2.json')) as f:
        assert json.load(f)['epochs'] == 2
    for name in ('config.json', 'metrics.json'):  # they describe model.npz
        with open(os.path.join(finished, name)) as f:
            assert json.load(f)['epochs'] == 3


def test_a_resume_accepts_moved_data_and_refuses_other_data(
        finished, folder, tmp_path, capsys):
    moved = str(tmp_path / 'moved')
    shutil.copytree(folder, moved)
    other = str(tmp_path / 'other')
    shutil.copytree(folder, other)
    os.remove(os.path.join(other, 'train', CLASSES[0], '0.png'))
    status, _, err = run(capsys, 'train', '--out', finished, '--resume',
                         '--data', other, '--epochs', '3')
    assert status == 1 and err.count('\n') == 1
    assert "the data's training images (35) are not those of the run in " \
        '%s (36)' % finished in err
    status, _, err = run(capsys, 'train', '--out', finished, '--resume',
                         '--data', moved, '--epochs', '3')
    assert status == 0, err
    with open(os.path.join(finished, 'config.json')) as f:
        assert json.load(f)['data'] == moved


def test_a_resume_drops_and_names_log_rows_no_checkpoint_has(
        finished, folder, capsys):
    log = os.path.join(finished, 'log.csv')
    with open(log) as f:
        text = f.read()
    with open(log, 'w') as f:  # an epoch after the checkpoint, a torn row
        f.write(text + '3,0.005,0.9,0.6,1.0,0.5,1.0\n4,0.0')
    status, out, err = run(capsys, 'train', '--out', finished, '--resume',
                           '--data', folder)
    assert status == 0, err
    assert 'dropped 2 row(s) of log.csv after epoch 2' in out
    with open(log) as f:
        assert [r['epoch'] for r in csv.DictReader(f)] == ['1', '2']


def test_the_log_reader_keeps_whole_rows_in_order(tmp_path):
    path = str(tmp_path / 'log.csv')
    with open(path, 'w') as f:
        f.write('epoch,train_loss,eval_acc\n1,0.5,0.1\n1\n2,0.4,nan\n'
                '2,0.4,0.2\n4,0.3,0.3\n')
    rows, dropped = runfolder.read_log_rows(path)
    assert [r['epoch'] for r in rows] == ['1', '2'] and dropped == 3


@pytest.mark.parametrize('name, text, message', [
    ('metrics.json', '{"accuracy": "high", "epochs": 2}',
     "metrics.json: accuracy must be a fraction in [0, 1], not 'high'"),
    ('metrics.json', '{"accuracy": 0.5}',
     'metrics.json: epochs must be a positive integer, not None'),
    ('config.json', '[1, 2]', 'config.json is not a JSON object'),
    ('config.json', '{"model": "gcm", "seed": 1, "lr_steps": "100", '
     '"lr_factor": 0.1, "data": "d"}',
     "config.json: lr_steps must be a list of epochs, not '100'"),
    ('config.json', '{', 'config.json (Expecting'),
])
def test_table3_skips_a_run_it_cannot_read_and_names_file_and_field(
        finished, tmp_path, capsys, name, text, message):
    runs = str(tmp_path / 'runs')
    good, bad = os.path.join(runs, 'good'), os.path.join(runs, 'bad')
    shutil.copytree(finished, good)
    shutil.copytree(finished, bad)
    with open(os.path.join(bad, name), 'w') as f:
        f.write(text)
    status, out, err = run(capsys, '--runs', runs, '--results',
                           str(tmp_path / 'r'), 'table3', '--no-timing')
    assert status == 0, err
    assert err.count('\n') == 1 and err.startswith('warning: skipped %s: '
                                                   % bad)
    assert message in err
    rows = report.table3(runs, timing=False)
    assert [r['runs'] for r in rows if r['runs']] == [1]  # the good one
