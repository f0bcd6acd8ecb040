"""gcm_lasagne.cifar10 (the archive, its checks, safe unpacking) on small
synthetic data: no network, no ../shared.

The CIFAR-10 archives here are real .tar.gz files laid out like the official
release, whose pickles are written byte for byte as Python 2's cPickle
(protocol 2) wrote them (`py2_pickle`): Python 3's own protocol 2 would pickle
bytes through `_codecs.encode`, which the loader's restricted unpickler
rightly refuses and which the official files never contain.
"""
import hashlib
import io
import os
import pickle
import struct
import tarfile
import urllib.error
import urllib.request

import numpy as np
import pytest

from gcm_lasagne import cifar10
from gcm_lasagne.errors import DataError

CLASSES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog',
           'horse', 'ship', 'truck']
BATCHES = ['data_batch_%d' % i for i in range(1, 6)] + ['test_batch']


# ------------------------------------------------------------ fixtures

def py2_pickle(obj):
    """What Python 2's cPickle.dumps(obj, 2) gives for what a CIFAR-10 batch
    holds: dicts, lists, tuples, (byte) str, ints, None, bools and uint8
    numpy arrays. Memo opcodes are left out; they change nothing loaded."""
    out = bytearray(b'\x80\x02')

    def put(o):
        if o is None:
            out.extend(b'N')
        elif o is True or o is False:
            out.extend(b'\x88' if o else b'\x89')
        elif isinstance(o, int):
            out.extend(b'K' + bytes([o]) if 0 <= o < 256
                       else b'J' + struct.pack('<i', o))
        elif isinstance(o, str):  # a Python 2 str: bytes, not unicode
            b = o.encode('latin1')
            out.extend((b'U' + bytes([len(b)]) if len(b) < 256
                        else b'T' + struct.pack('<I', len(b))) + b)
        elif isinstance(o, list):
            out.extend(b'](')
            for x in o:
                put(x)
            out.extend(b'e')
        elif isinstance(o, tuple):
            out.extend(b'(')
            for x in o:
                put(x)
            out.extend(b't')
        elif isinstance(o, dict):
            out.extend(b'}(')
            for k, v in o.items():
                put(k)
                put(v)
            out.extend(b'u')
        elif isinstance(o, np.ndarray):
            assert o.dtype == np.uint8
            out.extend(b'cnumpy.core.multiarray\n_reconstruct\n'
                       b'cnumpy\nndarray\n')
            put((0,))
            put('b')
            out.extend(b'\x87R(')              # TUPLE3, REDUCE, MARK
            put(1)
            put(tuple(o.shape))
            out.extend(b'cnumpy\ndtype\n')
            put(('u1', 0, 1))
            out.extend(b'R')
            put((3, '|', None, None, None, -1, -1, 0))
            out.extend(b'b')                   # BUILD the dtype
            put(False)
            put(o.tobytes().decode('latin1'))
            out.extend(b'tb')                  # TUPLE, BUILD the array
        else:
            raise TypeError(type(o))

    put(obj)
    return bytes(out + b'.')


class Evil(object):
    """Unpickling this makes a folder: the side effect the tests look for."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.mkdir, (self.path,)


class EvilExec(Evil):
    def __reduce__(self):
        return exec, ('import os; os.mkdir(%r)' % self.path,)


def md5(b):
    return hashlib.md5(b).hexdigest()


def batch(rng, n, name):
    x = rng.randint(0, 256, (n, 3072)).astype(np.uint8)
    y = [int(v) for v in rng.randint(0, 10, n)]
    return x, y, {'batch_label': name, 'labels': y, 'data': x,
                  'filenames': ['img_%d.png' % i for i in range(n)]}


def write_tar(path, members):
    """members: (name, bytes) pairs, or TarInfo objects for special ones."""
    with tarfile.open(path, 'w:gz') as tar:
        dir_info = tarfile.TarInfo('cifar-10-batches-py')
        dir_info.type, dir_info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(dir_info)
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                tar.addfile(m)
            else:
                info = tarfile.TarInfo(m[0])
                info.size = len(m[1])
                tar.addfile(info, io.BytesIO(m[1]))


def describe(path, raw, n_train=None):
    """The `archive` argument that fits a synthetic archive."""
    with open(path, 'rb') as f:
        blob = f.read()
    return dict(cifar10.CIFAR10, size=len(blob), md5=md5(blob),
                member_md5={k: md5(v) for k, v in raw.items()
                            if k != 'batches.meta'},
                n_train=n_train, n_test=None)


def make_cifar(tmp_path, n=4, replace=None, extra=(), seed=0):
    """A small archive in the official layout: n images a batch.
    `replace` swaps members' bytes; `extra` adds members at the end.
    Returns (data_dir, archive description, arrays)."""
    rng = np.random.RandomState(seed)
    raw, arrays = {}, {}
    for name in BATCHES:
        x, y, d = batch(rng, n + (name == 'test_batch'), name)
        raw[name], arrays[name] = py2_pickle(d), (x, y)
    raw['batches.meta'] = py2_pickle({'num_cases_per_batch': n,
                                      'label_names': CLASSES,
                                      'num_vis': 3072})
    raw.update(replace or {})
    data_dir = tmp_path / 'data'
    data_dir.mkdir(exist_ok=True)
    path = data_dir / cifar10.CIFAR10['filename']
    write_tar(str(path), [('cifar-10-batches-py/readme.html', b'<html/>')]
              + [('cifar-10-batches-py/' + k, v) for k, v in raw.items()]
              + list(extra))
    n_train = None if replace else 5 * n
    return str(data_dir), describe(str(path), raw, n_train), arrays


# ---------------------------------------------------------- CIFAR-10

def test_py2_pickle_writer_matches_pickle():
    x = np.arange(6, dtype=np.uint8).reshape(2, 3)
    obj = {'data': x, 'labels': [0, 300, -1], 'name': 'caf\xe9'}
    back = pickle.loads(py2_pickle(obj), encoding='latin1')
    assert back['labels'] == [0, 300, -1] and back['name'] == 'caf\xe9'
    np.testing.assert_array_equal(back['data'], x)
    assert back['data'].dtype == np.uint8


def test_loads_the_official_layout(tmp_path):
    data_dir, archive, arrays = make_cifar(tmp_path)
    d = cifar10.load_cifar10(data_dir, download=False, archive=archive)
    assert d['classes'] == CLASSES
    assert d['X_train'].shape == (20, 3, 32, 32)
    assert d['X_test'].shape == (5, 3, 32, 32)
    assert d['X_train'].dtype == np.uint8 and d['y_train'].dtype == np.int32
    rows = np.concatenate([arrays[b][0] for b in BATCHES[:5]])
    labels = sum([arrays[b][1] for b in BATCHES[:5]], [])
    np.testing.assert_array_equal(d['y_train'], labels)
    np.testing.assert_array_equal(d['y_test'], arrays['test_batch'][1])
    # Each row is the R plane, then G, then B, each 32x32 row-major.
    for i, ch, r, c in [(0, 0, 0, 0), (3, 1, 5, 31), (7, 2, 31, 2),
                        (19, 2, 31, 31)]:
        assert d['X_train'][i, ch, r, c] == rows[i, ch * 1024 + r * 32 + c]
    np.testing.assert_array_equal(d['X_train'].reshape(20, 3072), rows)
    np.testing.assert_array_equal(d['X_test'].reshape(5, 3072),
                                  arrays['test_batch'][0])


def test_python3_pickles_with_bytes_keys_load_too(tmp_path):
    x = np.full((4, 3072), 7, np.uint8)
    p3 = pickle.dumps({b'data': x, b'labels': [1, 2, 3, 9]}, protocol=3)
    meta = pickle.dumps({b'label_names': [c.encode() for c in CLASSES]},
                        protocol=3)
    data_dir, archive, _ = make_cifar(
        tmp_path, replace={'data_batch_2': p3, 'batches.meta': meta})
    d = cifar10.load_cifar10(data_dir, download=False, archive=archive)
    assert d['classes'] == CLASSES
    np.testing.assert_array_equal(d['y_train'][4:8], [1, 2, 3, 9])
    assert (d['X_train'][4:8] == 7).all()


def _no_unpickling(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError('unpickled before the checksum was checked')
    monkeypatch.setattr(cifar10, '_unpickle', fail)


@pytest.mark.parametrize('wrong', ['md5', 'size'])
def test_wrong_checksum_is_refused_before_unpickling(tmp_path, monkeypatch,
                                                     wrong):
    marker = tmp_path / 'pwned'
    evil = pickle.dumps(Evil(str(marker)), protocol=2)
    data_dir, archive, _ = make_cifar(tmp_path,
                                      replace={'batches.meta': evil})
    archive[wrong] = '0' * 32 if wrong == 'md5' else archive['size'] + 1
    _no_unpickling(monkeypatch)
    with pytest.raises(DataError) as e:
        cifar10.load_cifar10(data_dir, download=False, archive=archive)
    assert 'not the expected CIFAR-10 archive' in str(e.value)
    assert data_dir in str(e.value)
    assert not marker.exists()


def test_the_official_checksum_is_the_default(tmp_path, monkeypatch):
    data_dir, _, _ = make_cifar(tmp_path)
    _no_unpickling(monkeypatch)
    with pytest.raises(DataError, match='170498071 bytes'):
        cifar10.load_cifar10(data_dir, download=False)


@pytest.mark.parametrize('member', ['batches.meta', 'data_batch_3'])
@pytest.mark.parametrize('cls', [Evil, EvilExec])
def test_code_running_pickle_is_refused_despite_right_checksum(
        tmp_path, member, cls):
    marker = tmp_path / 'pwned'
    evil = pickle.dumps(cls(str(marker)), protocol=2)
    data_dir, archive, _ = make_cifar(tmp_path, replace={member: evil})
    with pytest.raises(DataError, match='refusing to unpickle'):
        cifar10.load_cifar10(data_dir, download=False, archive=archive)
    assert not marker.exists()


def test_member_md5_is_checked_before_unpickling(tmp_path, monkeypatch):
    data_dir, archive, _ = make_cifar(tmp_path)
    archive['member_md5'] = dict(archive['member_md5'],
                                 test_batch='0' * 32)
    _no_unpickling(monkeypatch)
    with pytest.raises(DataError, match='test_batch .*wrong md5'):
        cifar10.load_cifar10(data_dir, download=False, archive=archive)


def _special(name, kind):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = '/etc/passwd' if kind in (tarfile.SYMTYPE,
                                             tarfile.LNKTYPE) else ''
    return info


UNSAFE = [
    ('../evil', b'x'),
    ('cifar-10-batches-py/../../evil', b'x'),
    ('/tmp/evil', b'x'),
    _special('cifar-10-batches-py/link', tarfile.SYMTYPE),
    _special('cifar-10-batches-py/hard', tarfile.LNKTYPE),
    _special('cifar-10-batches-py/dev', tarfile.CHRTYPE),
]


def _name(m):
    return m.name if isinstance(m, tarfile.TarInfo) else m[0]


@pytest.mark.parametrize('member', UNSAFE, ids=_name)
def test_unsafe_member_is_refused(tmp_path, member):
    # The evil pickle comes before the unsafe member: all members are
    # checked before anything is unpickled.
    marker = tmp_path / 'pwned'
    data_dir, archive, _ = make_cifar(
        tmp_path, replace={'batches.meta': pickle.dumps(Evil(str(marker)), 2)},
        extra=[member])
    with pytest.raises(DataError) as e:
        cifar10.load_cifar10(data_dir, download=False, archive=archive)
    assert repr(_name(member)) in str(e.value)
    assert not marker.exists()


def test_truncated_archive_gives_a_clear_error(tmp_path):
    data_dir, archive, _ = make_cifar(tmp_path, n=50)
    path = os.path.join(data_dir, archive['filename'])
    with open(path, 'rb') as f:
        blob = f.read()
    with open(path, 'wb') as f:
        f.write(blob[:len(blob) // 2])
    with pytest.raises(DataError, match='not the expected'):
        cifar10.load_cifar10(data_dir, download=False, archive=archive)
    # Even when the checksum describes the truncated file:
    archive.update(size=len(blob) // 2, md5=md5(blob[:len(blob) // 2]))
    with pytest.raises(DataError, match='truncated or corrupt'):
        cifar10.load_cifar10(data_dir, download=False, archive=archive)


@pytest.mark.parametrize('replace, message', [
    ({'data_batch_1': py2_pickle({'data': np.zeros((2, 3000), np.uint8),
                                  'labels': [0, 1]})}, 'N x 3072 uint8'),
    ({'data_batch_1': py2_pickle({'data': np.zeros((2, 3072), np.uint8),
                                  'labels': [0, 10]})}, 'labels outside'),
    ({'data_batch_1': py2_pickle({'data': np.zeros((2, 3072), np.uint8),
                                  'labels': [0]})}, 'list of 2 integers'),
    ({'data_batch_1': py2_pickle({'labels': [0]})}, 'N x 3072 uint8'),
    ({'data_batch_1': py2_pickle([1, 2])}, 'does not hold a dict'),
    ({'test_batch': b'\x80\x02garbage'}, 'not a valid pickle'),
    ({'batches.meta': py2_pickle({'label_names': ['a', 'b']})},
     'list of 10 label_names'),
])
def test_malformed_batches_are_data_errors(tmp_path, replace, message):
    data_dir, archive, _ = make_cifar(tmp_path, replace=replace)
    with pytest.raises(DataError, match=message):
        cifar10.load_cifar10(data_dir, download=False, archive=archive)


def test_wrong_image_count_is_refused(tmp_path):
    data_dir, archive, _ = make_cifar(tmp_path)
    archive['n_test'] = 10000
    with pytest.raises(DataError, match='5 test images, expected 10000'):
        cifar10.load_cifar10(data_dir, download=False, archive=archive)


def test_missing_member_is_refused(tmp_path):
    data_dir, archive, _ = make_cifar(tmp_path)
    path = os.path.join(data_dir, archive['filename'])
    write_tar(path, [('cifar-10-batches-py/data_batch_1', b'x')])
    with open(path, 'rb') as f:
        blob = f.read()
    archive.update(size=len(blob), md5=md5(blob))
    with pytest.raises(DataError, match='lacks cifar-10-batches-py/'):
        cifar10.load_cifar10(data_dir, download=False, archive=archive)


def test_missing_archive_without_download_names_path_and_url(tmp_path):
    with pytest.raises(DataError) as e:
        cifar10.load_cifar10(str(tmp_path / 'nowhere'), download=False)
    message = str(e.value)
    assert str(tmp_path / 'nowhere' / 'cifar-10-python.tar.gz') in message
    assert cifar10.CIFAR10['url'] in message and '\n' not in message


def test_no_network_names_path_and_url(tmp_path, monkeypatch, capsys):
    def offline(url, timeout=None):
        raise urllib.error.URLError('Name or service not known')
    monkeypatch.setattr(urllib.request, 'urlopen', offline)
    data_dir = tmp_path / 'fresh'
    with pytest.raises(DataError) as e:
        cifar10.load_cifar10(str(data_dir))
    message = str(e.value)
    assert str(data_dir / 'cifar-10-python.tar.gz') in message
    assert cifar10.CIFAR10['url'] in message and '\n' not in message
    assert 'Name or service not known' in message
    assert not data_dir.exists() and capsys.readouterr().err == ''


def _serve(monkeypatch, blob, seen):
    def fake_urlopen(url, timeout=None):
        seen.append(url)
        return io.BytesIO(blob)
    monkeypatch.setattr(urllib.request, 'urlopen', fake_urlopen)


def test_download_is_checked_then_renamed(tmp_path, monkeypatch, capsys):
    source_dir, archive, _ = make_cifar(tmp_path)
    with open(os.path.join(source_dir, archive['filename']), 'rb') as f:
        blob = f.read()
    seen = []
    _serve(monkeypatch, blob, seen)
    data_dir = tmp_path / 'dl'
    d = cifar10.load_cifar10(str(data_dir), archive=archive)
    assert seen == [archive['url']] and d['X_train'].shape[0] == 20
    assert os.listdir(str(data_dir)) == [archive['filename']]
    err = capsys.readouterr().err
    assert err.startswith('\rdownloading') and err.count('\n') == 1
    assert err.endswith('\n') and '(100%)' in err
    # Present now: used as it is, no second download.
    cifar10.load_cifar10(str(data_dir), archive=archive, progress=False)
    assert len(seen) == 1


def test_bad_download_is_not_kept(tmp_path, monkeypatch):
    source_dir, archive, _ = make_cifar(tmp_path)
    with open(os.path.join(source_dir, archive['filename']), 'rb') as f:
        blob = f.read()
    _serve(monkeypatch, blob[:-10] + b'0123456789', [])
    data_dir = tmp_path / 'dl'
    with pytest.raises(DataError, match='not the expected one'):
        cifar10.load_cifar10(str(data_dir), archive=archive, progress=False)
    assert os.listdir(str(data_dir)) == []


class Broken(io.BytesIO):
    """A connection that drops after the first chunk."""

    def read(self, n=-1):
        if self.tell():
            raise ConnectionResetError(104, 'Connection reset by peer')
        return super().read(n)


def test_broken_download_is_a_data_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cifar10, '_CHUNK', 1000)
    monkeypatch.setattr(urllib.request, 'urlopen',
                        lambda url, timeout=None: Broken(b'x' * 5000))
    data_dir = tmp_path / 'dl'
    with pytest.raises(DataError) as e:
        cifar10.load_cifar10(str(data_dir))
    assert 'Connection reset by peer' in str(e.value)
    assert str(data_dir / 'cifar-10-python.tar.gz') in str(e.value)
    assert os.listdir(str(data_dir)) == []
    err = capsys.readouterr().err
    assert err.startswith('\rdownloading') and err.endswith('\n')
