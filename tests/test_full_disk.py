"""Every write is all or nothing, and a full disk is one line: a model, a
training checkpoint, Table 3, on a small tmpfs (mounting one needs root;
elsewhere these tests are skipped, saying why)."""
import os
import subprocess

import pytest

from gcm_lasagne import cli, shipped
from test_train import TINY, folder  # noqa: F401 (the fixture)


@pytest.fixture
def small_disk(tmp_path):
    """A folder on a tmpfs of 256 kB, unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip('mounting a small tmpfs needs root')
    path = str(tmp_path / 'small')
    os.mkdir(path)
    done = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=256k',
                           'tmpfs', path], capture_output=True, text=True)
    if done.returncode:
        pytest.skip('cannot mount a tmpfs here: %s' % done.stderr.strip())
    yield path
    subprocess.run(['umount', path], check=True)


def fill(folder):
    """Take all the space that is left."""
    with open(os.path.join(folder, 'filler'), 'wb', buffering=0) as f:
        try:
            while True:
                f.write(b'\0' * 4096)
        except OSError:
            pass


def run(capsys, *args):
    status = cli.main(list(args))
    return status, capsys.readouterr()


def test_a_model_that_does_not_fit_is_one_line_and_leaves_nothing(
        small_disk, capsys):
    out = os.path.join(small_disk, 'shared')
    status, (_, err) = run(capsys, 'export',
                           os.path.dirname(shipped.model_path()), out)
    assert status == 1 and err.count('\n') == 1, err
    assert err.startswith('error: cannot write %s/model.npz (No space left '
                          'on device); nothing was written' % out)
    assert os.listdir(out) == []  # no temporary file left behind


def test_a_checkpoint_that_does_not_fit_stops_training_in_one_line(
        small_disk, folder, capsys):
    out = os.path.join(small_disk, 'run')  # GCM's checkpoint: about 1.3 MB
    status, (_, err) = run(capsys, 'train', '--data', folder, '--out', out,
                           *TINY)
    assert status == 1 and err.count('\n') == 1, err
    assert 'cannot write %s/checkpoint.npz (No space left on device)' % out \
        in err
    assert not [n for n in os.listdir(out) if 'tmp' in n]


def test_table3_on_a_full_disk_keeps_the_previous_table(small_disk, tmp_path,
                                                        capsys):
    table = os.path.join(small_disk, 'table3.md')
    with open(table, 'w') as f:
        f.write('the previous table\n')
    fill(small_disk)
    status, (_, err) = run(capsys, '--runs', str(tmp_path / 'none'),
                           '--results', small_disk, 'table3', '--no-timing')
    assert status == 1 and err.count('\n') == 1, err
    assert err.startswith('error: No space left on device: %s' % table)
    with open(table) as f:
        assert f.read() == 'the previous table\n'
    assert sorted(os.listdir(small_disk)) == ['filler', 'table3.md']
