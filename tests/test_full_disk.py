"""Every write is all or nothing, and a full disk is one line: a model, a
training checkpoint, Table 3, the figures of `demo`, `compare` and
`explain`, `explain`'s .npz and the `faithfulness` outputs, on a small
tmpfs (mounting one needs root; elsewhere these tests are skipped, saying
why)."""
import math
import os
import subprocess

import numpy as np
import pytest
from PIL import Image

from gcm_lasagne import cli, shipped
from test_api import _save as tiny_model
from test_faithfulness import _folder as faith_data, _model as faith_model
from test_train import TINY, folder  # noqa: F401 (the fixture)

PAGE = 4096  # a tmpfs counts its space in pages


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


def fill(folder, leave=0):
    """Take all the space that is left but `leave` bytes (whole pages)."""
    path = os.path.join(folder, 'filler')
    with open(path, 'wb', buffering=0) as f:
        try:
            while True:
                f.write(b'\0' * PAGE)
        except OSError:
            pass
    pages = int(math.ceil(leave / float(PAGE)))
    os.truncate(path, max(os.path.getsize(path) - pages * PAGE, 0))


def previous(folder, names):
    """A previous good version of each file, also hard-linked into
    FOLDER/.kept so that replacing it frees no space (the test decides
    what fits). Returns {name: bytes}."""
    os.makedirs(os.path.join(folder, '.kept'), exist_ok=True)
    kept = {}
    for name in names:
        path = os.path.join(folder, name)
        if not os.path.exists(path):
            with open(path, 'wb') as f:
                f.write(b'the previous %s\n' % name.encode())
        os.link(path, os.path.join(folder, '.kept', name))
        with open(path, 'rb') as f:
            kept[name] = f.read()
    return kept


def unchanged(folder, kept):
    """The names of kept files whose bytes are still the previous ones."""
    out = []
    for name, data in sorted(kept.items()):
        with open(os.path.join(folder, name), 'rb') as f:
            if f.read() == data:
                out.append(name)
    return out


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


def _sample(tmp_path, name='a.png', seed=0):
    path = str(tmp_path / name)
    pixels = np.random.RandomState(seed).randint(0, 256, (8, 8, 3))
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return path


def _figure_commands(tmp_path, out):
    """(command line, files it writes, the first of them) per command that
    draws a figure."""
    gcm, cnn = shipped.model_path(), shipped.model_path('cnn-cifar10jpeg')
    tiny = tiny_model(str(tmp_path / 'tiny.npz'), 'gcm')
    return {
        'demo': (['demo', '--out', out], ['figure6.png', 'figure8.png']),
        'compare': (['compare', gcm, cnn, shipped.sample_paths()[0],
                     '--out', out], ['compare.png']),
        'explain': (['explain', tiny, _sample(tmp_path), '--out', out],
                    ['a_ccm.png', 'a_ccm.npz'])}


@pytest.mark.parametrize('command', ['demo', 'compare', 'explain'])
def test_a_figure_on_a_full_disk_keeps_the_previous_one(small_disk,
                                                        tmp_path, capsys,
                                                        command):
    out = os.path.join(small_disk, 'out')
    os.mkdir(out)
    args, names = _figure_commands(tmp_path, out)[command]
    kept = previous(out, names)
    fill(small_disk)
    status, (_, err) = run(capsys, *args)
    assert status == 1 and err.count('\n') == 1, err
    assert err == 'error: No space left on device: %s\n' % os.path.join(
        out, names[0])
    assert unchanged(out, kept) == sorted(names)
    assert sorted(os.listdir(out)) == sorted(names + ['.kept'])  # no temp


def test_explains_npz_on_a_full_disk_keeps_the_previous_one(small_disk,
                                                            tmp_path,
                                                            capsys):
    """Room for the new figure but not for the maps: the figure is
    replaced whole, the .npz stays the previous one, one line says so."""
    out = os.path.join(small_disk, 'out')
    tiny = tiny_model(str(tmp_path / 'tiny.npz'), 'gcm')
    image = _sample(tmp_path, seed=1)
    assert run(capsys, 'explain', tiny, image, '--out', out)[0] == 0
    kept = previous(out, ['a_ccm.png', 'a_ccm.npz'])
    with np.load(os.path.join(out, 'a_ccm.npz')) as f:
        before = f['image']
    image = _sample(tmp_path, seed=2)  # the same name, other pixels
    probe = str(tmp_path / 'probe')
    assert run(capsys, 'explain', tiny, image, '--out', probe)[0] == 0
    fill(small_disk, leave=os.path.getsize(os.path.join(probe,
                                                        'a_ccm.png')))
    status, (_, err) = run(capsys, 'explain', tiny, image, '--out', out)
    assert status == 1 and err.count('\n') == 1, err
    assert err == 'error: No space left on device: %s/a_ccm.npz\n' % out
    assert unchanged(out, kept) == ['a_ccm.npz']
    with open(os.path.join(out, 'a_ccm.png'), 'rb') as f, \
            open(os.path.join(probe, 'a_ccm.png'), 'rb') as g:
        assert f.read() == g.read()  # the new figure, whole
    with np.load(os.path.join(out, 'a_ccm.npz')) as f:
        np.testing.assert_array_equal(f['image'], before)
    assert sorted(os.listdir(out)) == ['.kept', 'a_ccm.npz', 'a_ccm.png']


FAITHFULNESS = ['faithfulness.csv', 'randomisation.csv', 'per_image.npz',
                'curves.png', 'curves.pdf', 'faithfulness.md']


@pytest.mark.parametrize('room', [0, 2], ids=['nothing', 'two-tables'])
def test_faithfulness_on_a_full_disk_keeps_its_previous_description(
        small_disk, tmp_path, capsys, room):
    """Nothing fits: every previous file stays. Room for the two tables
    only: they are replaced whole, and faithfulness.md, which describes
    the results and is written last, stays the previous one."""
    data, out = faith_data(tmp_path / 'data'), os.path.join(small_disk, 'out')
    model = faith_model(tmp_path / 'cnn.npz')
    os.mkdir(out)
    kept = previous(out, FAITHFULNESS)
    fill(small_disk, leave=room * PAGE)
    status, (_, err) = run(capsys, 'faithfulness', model, '--data', data,
                           '--images', '4', '--steps', '2', '--methods',
                           'random', '--randomisation-images', '0',
                           '--out', out)
    assert status == 1 and err.count('\n') == 1, err
    fails = FAITHFULNESS[room]  # the tables are a page each
    assert err == 'error: No space left on device: %s\n' % os.path.join(
        out, fails)
    assert unchanged(out, kept) == sorted(FAITHFULNESS[room:])
    with open(os.path.join(out, 'faithfulness.csv')) as f:
        assert f.read().startswith('model,method,images' if room else
                                   'the previous')
    assert sorted(os.listdir(out)) == sorted(FAITHFULNESS + ['.kept'])
