"""gcm_lasagne.archives: tar archives checked before anything is written,
unpacked all or nothing, and an image folder given to --data as one."""
import os
import tarfile

import numpy as np
import pytest

import run_cifar10
from gcm_lasagne import archives, checkpoint, report
from gcm_lasagne.errors import DataError
from test_cifar10 import UNSAFE, _name, write_tar
from test_train import TINY, folder  # noqa: F401 (the fixture)


def _tar(root, path, arcname):
    with tarfile.open(path, 'w:gz') as tar:
        tar.add(root, arcname=arcname)
    return str(path)


@pytest.mark.parametrize('member', UNSAFE, ids=_name)
def test_unsafe_members_are_refused_before_writing(tmp_path, member):
    tar_path = str(tmp_path / 'bad.tar.gz')
    write_tar(tar_path, [('cifar-10-batches-py/ok', b'fine'), member])
    with pytest.raises(DataError) as e:
        archives.unpacked_image_folder(tar_path, str(tmp_path / 'd'))
    assert repr(_name(member)) in str(e.value)
    assert sorted(os.listdir(str(tmp_path))) == ['bad.tar.gz']


def test_a_truncated_archive_leaves_nothing(tmp_path):
    tar_path = tmp_path / 'cut.tar.gz'
    write_tar(str(tar_path), [('a/b', os.urandom(50000))])
    tar_path.write_bytes(tar_path.read_bytes()[:20000])
    with pytest.raises(DataError, match='cut.tar.gz'):
        archives.unpacked_image_folder(str(tar_path), str(tmp_path / 'd'))
    assert sorted(os.listdir(str(tmp_path))) == ['cut.tar.gz']


def test_an_interrupted_unpacking_leaves_nothing(folder, tmp_path,
                                                 monkeypatch):
    tar_path = _tar(folder, tmp_path / 'shapes.tar.gz', 'shapes')

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(tarfile.TarFile, 'extractall', interrupted)
    with pytest.raises(KeyboardInterrupt):
        archives.unpacked_image_folder(tar_path, str(tmp_path / 'd'))
    assert os.listdir(str(tmp_path / 'd')) == []


def test_an_archive_is_unpacked_once_and_while_unchanged(folder, tmp_path):
    tar_path = _tar(folder, tmp_path / 'shapes.tgz', 'shapes')
    data_dir = str(tmp_path / 'd')
    root = archives.unpacked_image_folder(tar_path, data_dir)
    assert root == os.path.join(data_dir, 'shapes', 'shapes')
    stamp = os.stat(os.path.join(root, 'train')).st_mtime_ns
    os.remove(os.path.join(root, 'test', 'circle', '0.png'))  # a sign
    assert archives.unpacked_image_folder(tar_path, data_dir) == root
    assert os.stat(os.path.join(root, 'train')).st_mtime_ns == stamp
    assert not os.path.exists(os.path.join(root, 'test', 'circle', '0.png'))
    # another archive of the same name is not read as the old one's copy
    _tar(os.path.join(folder, 'train'), tar_path, 'shapes')
    with pytest.raises(DataError, match='is not an unpacked copy'):
        archives.unpacked_image_folder(tar_path, data_dir)


def test_two_processes_unpacking_at_once_share_one_copy(folder, tmp_path,
                                                        monkeypatch):
    tar_path = _tar(folder, tmp_path / 'shapes.tar.gz', 'shapes')
    unpack = archives._unpack

    def another_process_first(*args, **kwargs):
        unpack(*args, **kwargs)  # it finishes while this one unpacks
        return unpack(*args, **kwargs)
    monkeypatch.setattr(archives, '_unpack', another_process_first)
    root = archives.unpacked_image_folder(tar_path, str(tmp_path / 'd'))
    assert root == str(tmp_path / 'd' / 'shapes' / 'shapes')
    assert os.listdir(str(tmp_path / 'd')) == ['shapes']


def test_training_on_an_archive_is_training_on_its_folder(folder, tmp_path,
                                                          capsys):
    # a folder packed without a top-level folder: train/ at the top
    tar_path = str(tmp_path / 'shapes.tar')
    with tarfile.open(tar_path, 'w') as tar:
        for name in ('train', 'test'):
            tar.add(os.path.join(folder, name), arcname=name)
    one_epoch = ['--model', 'cnn'] + TINY[:1] + ['1'] + TINY[2:]
    weights = []
    for name, data in (('folder', folder), ('archive', tar_path)):
        out = str(tmp_path / name)
        assert run_cifar10.main(['train', '--data', data, '--data-dir',
                                 str(tmp_path / 'd'), '--out', out]
                                + one_epoch) == 0
        weights.append(checkpoint.read(os.path.join(out, 'model.npz'))[1])
    assert all(np.array_equal(a, b) for a, b in zip(*weights))
    _, meta, _ = checkpoint.load(os.path.join(out, 'model.npz'))
    assert meta['config']['data'] == tar_path
    assert report.data_name(meta['config']) == 'shapes'
    assert os.path.isdir(str(tmp_path / 'd' / 'shapes' / 'train'))
    capsys.readouterr()
    assert run_cifar10.main(['train', '--data', str(tmp_path / 'no.tar.gz'),
                             '--out', str(tmp_path / 'x')] + one_epoch) == 1
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'no archive at' in err
