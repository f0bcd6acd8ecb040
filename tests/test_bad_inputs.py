"""Issue 12: every bad model file, image folder, image and option set ends
in one line on stderr and a non-zero exit, and writes nothing outside its
run folder (run/ in the case's folder).

A case is one line of CASES: a name, what to put in the case's folder, the
arguments (from that folder; {good} is a valid tiny image folder) and
words the error line must hold. Every case runs through the command
line's main() in one child process (tests/cli_many.py: per case its own
folder, stdout/stderr file descriptors and warnings; importing Theano costs
about a second a process); OWN_PROCESS, one case of each kind, also runs as
run_cifar10.py in a process of its own."""
import io
import json
import os
import pickle
import shlex
import subprocess
import sys
import zipfile

import lasagne
import numpy as np
import pytest
from PIL import Image

from gcm_lasagne import train
from gcm_lasagne.models import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ['a', 'b', 'c']
TRAIN = '--epochs 2 --batch-size 4 --lr-steps 1 --out run'


def _png(path, size=(8, 8), seed=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.RandomState(seed)
    Image.fromarray(rng.randint(0, 255, size + (3,), np.uint8)).save(path)


def image_folder(root, classes=CLASSES, train=4, test=2, size=(8, 8)):
    for split, n in (('train', train), ('test', test)):
        for c in classes:
            for i in range(n):
                _png(os.path.join(root, split, c, '%d.png' % i), size, i)


def _valid_model():
    """The arrays and meta of a valid model of the {good} folder."""
    net = build_model('gcm', len(CLASSES), (3, 8, 8))
    arrays = {'arr_%d' % i: v for i, v in enumerate(
        lasagne.layers.get_all_param_values(net['prob']))}
    meta = {'model': 'gcm', 'classes': CLASSES, 'input_shape': [3, 8, 8],
            'config': train.default_config(data='good')}
    return arrays, meta


# ------------------------------------------------- what a case starts from

def nothing(d):
    pass


def raw(name, content):
    def build(d):
        with open(os.path.join(d, name), 'wb') as f:
            f.write(content)
    return build


def model(meta=None, **arrays):
    """m.npz: the valid model with arrays replaced (None: removed) and its
    meta updated from a dict, or replaced by a string or an array."""
    def build(d):
        named, description = _valid_model()
        for k, v in arrays.items():
            if v is None:
                del named[k]
            else:
                named[k] = v(named.get(k)) if callable(v) else v
        if isinstance(meta, dict):
            description.update(meta)
        named['meta'] = (meta if isinstance(meta, np.ndarray) else
                         np.array(meta if isinstance(meta, str) else
                                  json.dumps(description)))
        if meta is False:
            del named['meta']
        np.savez(os.path.join(d, 'm.npz'), **named)
    return build


def huge_declared_array(d):
    """m.npz whose arr_0 declares 10**11 float32 values (373 GiB) and
    holds 16 bytes."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {'descr': '<f4', 'fortran_order': False, 'shape': (10 ** 11,)})
    meta = io.BytesIO()
    np.save(meta, np.array(json.dumps(_valid_model()[1])))
    with zipfile.ZipFile(os.path.join(d, 'm.npz'), 'w') as z:
        z.writestr('arr_0.npy', header.getvalue() + b'\0' * 16)
        z.writestr('meta.npy', meta.getvalue())


def finished_run(**arrays):
    """r/: a finished run folder whose model.npz is model(**arrays)."""
    def build(d):
        os.makedirs(os.path.join(d, 'r'))
        model(**arrays)(os.path.join(d, 'r'))
        os.rename(os.path.join(d, 'r', 'm.npz'),
                  os.path.join(d, 'r', 'model.npz'))
        for name in ('config.json', 'log.csv', 'metrics.json'):
            _write(os.path.join(d, 'r', name), b'{}')
    return build


def truncated_model(d):
    model()(d)
    path = os.path.join(d, 'm.npz')
    with open(path, 'rb') as f:
        content = f.read()
    with open(path, 'wb') as f:
        f.write(content[:len(content) // 2])


def folder(change=None, **kw):
    """data/: a tiny image folder, then `change(root)`."""
    def build(d):
        root = os.path.join(d, 'data')
        image_folder(root, **kw)
        if change:
            change(root)
    return build


def both(*builds):
    def build(d):
        for b in builds:
            b(d)
    return build


def _write(path, content):
    with open(path, 'wb') as f:
        f.write(content)


def _jpeg_cut(root):
    path = os.path.join(root, 'train', 'b', 'x.jpg')
    Image.new('RGB', (8, 8), 'red').save(path, quality=90)
    with open(path, 'rb') as f:
        head = f.read(40)
    _write(path, head)


def _empty_class(root):
    os.makedirs(os.path.join(root, 'train', 'd'))
    _png(os.path.join(root, 'test', 'd', '0.png'))


def training_checkpoint(out, data, **arrays):
    """out/checkpoint.npz as a run of the valid model on `data` would leave
    it after epoch 1 (2 epochs, batches of 4), with these arrays replaced
    (None: removed)."""
    named, meta = _valid_model()
    meta['config'] = train.default_config(data=data, epochs=2, batch_size=4,
                                          lr_steps=[1])
    net = build_model('gcm', len(CLASSES), (3, 8, 8))
    trainable = lasagne.layers.get_all_params(net['prob'], trainable=True)
    named.update({'velocity_%d' % i: np.zeros_like(p.get_value())
                  for i, p in enumerate(trainable)})
    rng = np.random.RandomState(0).get_state()
    named.update(epoch=np.array(1), rng_keys=rng[1],
                 rng_pos=np.array([rng[2], rng[3]]),
                 rng_gauss=np.array(rng[4]))
    for k, v in arrays.items():
        if v is None:
            del named[k]
        else:
            named[k] = v
    os.makedirs(out)
    named['meta'] = np.array(json.dumps(meta))
    np.savez(os.path.join(out, 'checkpoint.npz'), **named)


def _run_with(**arrays):
    """run/: a run folder on data/ with such a checkpoint."""
    return both(folder(), lambda d: training_checkpoint(
        os.path.join(d, 'run'), os.path.join(d, 'data'), **arrays))


NAN = np.full((16, 3, 3, 3), np.nan, np.float32)
G = '--data {good} ' + TRAIN       # options on valid data
N = '--data nowhere ' + TRAIN      # options that fail before the data loads

CASES = [
    # model files
    ('model: zero bytes', raw('m.npz', b''), 'evaluate m.npz', 'empty'),
    ('model: text', raw('m.npz', b'weights\n'), 'evaluate m.npz', 'not an .npz'),
    ('model: a pickle', raw('m.npz', pickle.dumps({'arr_0': [1.0]})), 'evaluate m.npz', 'not an .npz'),
    ('model: truncated', truncated_model, 'evaluate m.npz', 'truncated'),
    ('model: a folder', lambda d: os.mkdir(os.path.join(d, 'm.npz')), 'evaluate m.npz', 'no model file'),
    ('model: missing file', nothing, 'figures m.npz --out run', 'no model file'),
    ('model: object array', model(arr_0=np.array([{'x': 1}], object)), 'evaluate m.npz', 'allow_pickle'),
    ('model: no meta', model(meta=False), 'evaluate m.npz', 'no meta'),
    ('model: meta not JSON', model(meta='{"model": gcm'), 'evaluate m.npz', 'not JSON'),
    ('model: meta a list', model(meta='["gcm"]'), 'evaluate m.npz', 'JSON object'),
    ('model: meta a number', model(meta=np.array(3.0)), 'evaluate m.npz', 'JSON object'),
    ('model: unknown model', model(meta={'model': 'resnet'}), 'evaluate m.npz', 'unknown model'),
    ('model: one class', model(meta={'classes': ['a']}), 'evaluate m.npz', 'at least 2'),
    ('model: classes repeat', model(meta={'classes': ['a', 'a', 'b']}), 'evaluate m.npz', 'at least 2'),
    ('model: wrong class count', model(meta={'classes': ['a', 'b']}), 'evaluate m.npz', 'conv15.W) has shape'),
    ('model: input not /4', model(meta={'input_shape': [3, 10, 10]}), 'evaluate m.npz', 'divisible by 4'),
    ('model: input shape text', model(meta={'input_shape': '3x8x8'}), 'evaluate m.npz', 'input_shape'),
    ('model: grey input', model(meta={'input_shape': [1, 8, 8]}), 'evaluate m.npz', 'input_shape'),
    ('model: no config', model(meta={'config': None}), 'evaluate m.npz', 'give --data'),
    ('model: first array missing', model(arr_0=None), 'evaluate m.npz', 'lacks parameter array arr_0'),
    ('model: last array missing', model(arr_71=None), 'evaluate m.npz', 'lacks arr_71 (conv15.b)'),
    ('model: extra array', model(arr_72=np.zeros(3, np.float32)), 'evaluate m.npz', 'arr_72 and after are extra'),
    ('model: arr_00 beside arr_0', model(arr_00=np.zeros(3, np.float32)), 'evaluate m.npz', "'arr_00'"),
    ('model: 373 GiB declared', huge_declared_array, 'evaluate m.npz', 'not a gcm-lasagne model file'),
    ('model: foreign array', model(notes=np.zeros(3)), 'evaluate m.npz', "'notes'"),
    ('model: wrong shape', model(arr_0=np.zeros((16, 3, 5, 5), np.float32)), 'evaluate m.npz', 'arr_0 (conv1.W) has shape (16, 3, 5, 5)'),
    ('model: integer weights', model(arr_0=lambda v: v.astype(np.int32)), 'evaluate m.npz', 'arr_0 is int32'),
    ('model: NaN weights', model(arr_0=NAN), 'evaluate m.npz', 'arr_0 holds NaN'),
    ('model: inf in BN', model(arr_4=np.full(16, np.inf, np.float32)), 'explain m.npz x.png', 'arr_4 holds NaN or inf'),
    ('model: float64 too big', model(arr_0=np.full((16, 3, 3, 3), 1e300)), 'evaluate m.npz', 'as float32'),
    ('model: NaN for figures', model(arr_3=np.full(16, np.nan, np.float32)), 'figures m.npz --out run', 'arr_3 holds NaN'),
    ('model: complex weights', model(arr_0=lambda v: v.astype(np.complex64)), 'evaluate m.npz', 'complex64'),
    # image folders and images
    ('data: not there', nothing, 'train --data data ' + TRAIN, 'not a folder'),
    ('data: a file', raw('data', b'x'), 'train --data data ' + TRAIN, 'not a folder'),
    ('data: no test/', folder(lambda r: os.rename(os.path.join(r, 'test'), os.path.join(r, 'tst'))), 'train --data data ' + TRAIN, 'no folder'),
    ('data: empty train/', lambda d: [os.makedirs(os.path.join(d, 'data', s)) for s in ('train', 'test')], 'train --data data ' + TRAIN, 'no class folders'),
    ('data: one class', folder(classes=['a']), 'train --data data ' + TRAIN, 'at least 2'),
    ('data: empty class folder', folder(_empty_class), 'train --data data ' + TRAIN, 'no .png/.jpg/.jpeg images'),
    ('data: classes differ', folder(lambda r: os.rename(os.path.join(r, 'test', 'c'), os.path.join(r, 'test', 'z'))), 'train --data data ' + TRAIN, 'different class folders'),
    ('data: corrupt JPEG', folder(_jpeg_cut), 'train --data data ' + TRAIN, 'x.jpg'),
    ('data: text named .png', folder(lambda r: _write(os.path.join(r, 'train', 'a', 'x.png'), b'not an image')), 'train --data data ' + TRAIN, 'x.png'),
    ('data: zero-byte .png', folder(lambda r: _write(os.path.join(r, 'test', 'a', 'x.png'), b'')), 'train --data data ' + TRAIN, 'x.png'),
    ('data: folder named .png', folder(lambda r: os.mkdir(os.path.join(r, 'train', 'a', 'x.png'))), 'train --data data ' + TRAIN, 'x.png'),
    ('data: dangling link', folder(lambda r: os.symlink('gone.png', os.path.join(r, 'train', 'c', 'x.png'))), 'train --data data ' + TRAIN, 'x.png'),
    ('data: sizes differ', folder(lambda r: _png(os.path.join(r, 'train', 'a', 'x.png'), (12, 12))), 'train --data data ' + TRAIN, 'one size'),
    ('data: size not /4', folder(size=(10, 10)), 'train --data data ' + TRAIN, 'divisible by 4'),
    ('data: wrong classes for model', both(model(), folder(classes=['x', 'y', 'z'])), 'evaluate m.npz --data data', 'classes'),
    ('data: wrong size for model', both(model(), folder(size=(12, 12))), 'evaluate m.npz --data data', '--image-size'),
    ('data: explain a text .png', both(model(), raw('x.png', b'hello')), 'explain m.npz x.png --out run', 'x.png'),
    ('data: explain no image', model(), 'explain m.npz x.png --out run', 'no image file'),
    ('data: no CIFAR-10', nothing, 'train --no-download --data-dir none ' + TRAIN, 'none'),
    # options before anything is loaded (--data nowhere would fail next)
    ('option: lr nan', nothing, 'train --learning-rate nan ' + N, '--learning-rate: nan: must be a positive finite number'),
    ('option: lr inf', nothing, 'train --learning-rate inf ' + N, '--learning-rate: inf: must be'),
    ('option: lr 0', nothing, 'train --learning-rate 0 ' + N, '--learning-rate: 0: must be'),
    ('option: lr negative', nothing, 'train --learning-rate=-0.1 ' + N, '--learning-rate: -0.1: must be'),
    ('option: lr text', nothing, 'train --learning-rate fast ' + N, "--learning-rate: 'fast': must be"),
    ('option: momentum 1', nothing, 'train --momentum 1 ' + N, '--momentum: 1: must be in [0, 1)'),
    ('option: momentum negative', nothing, 'train --momentum=-0.5 ' + N, '--momentum'),
    ('option: momentum nan', nothing, 'train --momentum nan ' + N, '--momentum'),
    ('option: weight decay negative', nothing, 'train --weight-decay=-1e-4 ' + N, '--weight-decay'),
    ('option: weight decay inf', nothing, 'train --weight-decay inf ' + N, '--weight-decay'),
    ('option: lr factor 0', nothing, 'train --lr-factor 0 ' + N, '--lr-factor'),
    ('option: lr factor 10', nothing, 'train --lr-factor 10 ' + N, '--lr-factor'),
    ('option: lr factor nan', nothing, 'train --lr-factor nan ' + N, '--lr-factor'),
    ('option: lr step after the end', nothing, 'train --data nowhere --epochs 2 --lr-steps 1 3 --out run', '--lr-steps 1 3'),
    ('option: lr step 0', nothing, 'train --lr-steps 0 ' + N, 'positive integer'),
    ('option: epochs 0', nothing, 'train --epochs 0 --data nowhere', 'positive integer'),
    ('option: batch size 0', nothing, 'train --batch-size 0 --data nowhere', 'positive integer'),
    ('option: pad negative', nothing, 'train --pad=-1 ' + N, '--pad'),
    ('option: seed negative', nothing, 'train --seed=-1 ' + N, '--seed'),
    ('option: seed 2**32', nothing, 'train --seed 4294967296 ' + N, '--seed'),
    ('option: validation negative', nothing, 'train --validation=-5 ' + N, '--validation'),
    ('option: subset negative', nothing, 'train --train-subset=-1 ' + N, '--train-subset'),
    ('option: image size 0', nothing, 'train --image-size 0 8 ' + N, 'positive integer'),
    ('option: image size not /4', nothing, 'train --image-size 10 12 ' + N, '--image-size 10 12'),
    ('option: image size huge', nothing, 'train --image-size 100000 100000 ' + N, 'at most'),
    ('option: top 0', model(), 'explain m.npz x.png --top 0', 'positive integer'),
    ('option: unknown model', nothing, 'train --model vgg ' + N, 'invalid choice'),
    ('option: unknown command', nothing, 'fit', 'invalid choice'),
    # options against the data, before anything compiles
    ('option: batch larger than data', nothing, 'train ' + G.replace('--batch-size 4', '--batch-size 13'), '--batch-size 13'),
    ('option: pad as large as images', nothing, 'train --pad 8 ' + G, '--pad 8: must be smaller than the images (8x8)'),
    ('option: validation = data', nothing, 'train --validation 12 ' + G, '--validation 12: must be fewer than the 12'),
    ('option: validation > data', nothing, 'train --validation 100 ' + G, '--validation 100'),
    ('option: subset > data', nothing, 'train --train-subset 13 ' + G, '--train-subset 13'),
    ('option: subset > data - validation', nothing, 'train --validation 3 --train-subset 10 ' + G, 'besides --validation'),
    # folders to write into and runs to resume
    ('folder: --out a file', raw('run', b''), 'train ' + G, 'is a file'),
    ('folder: --out inside a file', raw('f', b''), 'train --data {good} --epochs 1 --batch-size 4 --out f/run', 'cannot create the run folder'),
    ('folder: figures --out a file', both(model(), raw('run', b'')), 'figures m.npz --out run', 'is a file'),
    ('folder: explain --out a file', both(model(), raw('run', b'')), 'explain m.npz x.png --out run', 'is a file'),
    ('folder: demo --out a file', raw('run', b''), 'demo --out run', 'is a file'),
    ('folder: --results a file', raw('res', b''), '--results res table3 --no-timing', 'is a file'),
    ('folder: export into a file', both(finished_run(), raw('run', b'')), 'export r run', 'is a file'),
    ('export: not a run', nothing, 'export r run', 'not a finished run'),
    ('export: NaN model', finished_run(arr_9=np.full(16, np.nan, np.float32)), 'export r run', 'arr_9 holds NaN'),
    ('resume: nothing there', nothing, 'train --resume ' + G, 'nothing to resume'),
    ('resume: empty folder', lambda d: os.mkdir(os.path.join(d, 'run')), 'train --resume ' + G, 'nothing to resume'),
    ('resume: run exists', both(lambda d: os.mkdir(os.path.join(d, 'run')), raw('run/checkpoint.npz', b'')), 'train ' + G, 'already holds a run'),
    ('resume: checkpoint empty', both(lambda d: os.mkdir(os.path.join(d, 'run')), raw('run/checkpoint.npz', b'')), 'train --resume ' + G, 'empty'),
    ('resume: no momentum', _run_with(velocity_3=None), 'train --resume ' + G, 'velocity_3'),
    ('resume: no epoch', _run_with(epoch=None), 'train --resume ' + G, 'epoch'),
    ('resume: bad rng', _run_with(rng_keys=np.zeros(5, np.uint32)), 'train --resume ' + G, 'broken training state'),
    ('resume: NaN momentum', _run_with(velocity_0=NAN), 'train --resume ' + G, 'velocity_0 holds NaN'),
    ('resume: other classes', both(_run_with(), lambda d: [os.rename(os.path.join(d, 'data', s, 'c'), os.path.join(d, 'data', s, 'q')) for s in ('train', 'test')]), 'train --resume --data data ' + TRAIN, 'not those of the run'),
]


# one of each kind also runs as a process of its own
OWN_PROCESS = ['model: truncated', 'model: NaN weights', 'data: corrupt JPEG',
               'data: wrong size for model', 'option: lr nan',
               'option: epochs 0', 'option: batch larger than data',
               'folder: --out a file', 'resume: nothing there',
               'resume: no momentum']


def _tree(root):
    """Every path under root, with its size and modification time."""
    seen = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            st = os.lstat(path)
            seen[path] = (st.st_size, st.st_mtime_ns)
    return seen


def _setup(folder, build, args, shared):
    os.makedirs(folder)
    build(folder)
    return [a.format(**shared) for a in shlex.split(args)]


@pytest.fixture(scope='module')
def shared(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('shared'))
    image_folder(os.path.join(root, 'good'))
    return {'good': os.path.join(root, 'good'), 'root': root}


@pytest.fixture(scope='module')
def corpus(shared, tmp_path_factory):
    """Every case run once by tests/cli_many.py: {name: (exit code, stderr,
    paths changed)}."""
    root = str(tmp_path_factory.mktemp('corpus'))
    jobs, folders = [], []
    for i, (name, build, args, _) in enumerate(CASES):
        folders.append(os.path.join(root, str(i)))
        jobs.append([folders[-1], _setup(folders[-1], build, args, shared)])
    before = [_tree(f) for f in folders]
    shared_before = _tree(shared['root'])
    with open(os.path.join(root, 'jobs.json'), 'w') as f:
        json.dump(jobs, f)
    done = subprocess.run([sys.executable, os.path.join(ROOT, 'tests',
                                                        'cli_many.py'),
                           os.path.join(root, 'jobs.json'),
                           os.path.join(root, 'results.json')], cwd=root,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert _tree(shared['root']) == shared_before
    with open(os.path.join(root, 'results.json')) as f:
        results = json.load(f)
    return {case[0]: (code, err, _changed(before[i], _tree(folders[i])),
                      folders[i])
            for i, (case, (code, err)) in enumerate(zip(CASES, results))}


def _changed(before, after):
    return {p for p in set(before) | set(after)
            if before.get(p) != after.get(p)}


def _check(code, err, changed, folder, words):
    assert code != 0
    assert 'Traceback' not in err
    assert err.count('\n') == 1 and err.endswith('\n'), err
    assert words in err
    run = os.path.join(folder, 'run')
    assert {p for p in changed
            if p != run and not p.startswith(run + os.sep)} == set()


def test_cases_have_unique_names():
    names = [c[0] for c in CASES]
    assert len(set(names)) == len(names)
    assert set(OWN_PROCESS) <= set(names)


@pytest.mark.parametrize('name, words', [(c[0], c[3]) for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_input_ends_in_one_line(name, words, corpus):
    _check(*corpus[name], words=words)


@pytest.mark.parametrize('name', OWN_PROCESS)
def test_in_a_process_of_its_own_too(name, shared, tmp_path):
    _, build, args, words = next(c for c in CASES if c[0] == name)
    folder = str(tmp_path / 'case')
    argv = _setup(folder, build, args, shared)
    before = _tree(folder)
    done = subprocess.run([sys.executable, os.path.join(ROOT,
                                                        'run_cifar10.py')]
                          + argv, cwd=folder, capture_output=True, text=True,
                          timeout=300)
    _check(done.returncode, done.stderr, _changed(before, _tree(folder)),
           folder, words)


def test_a_refusal_of_the_system_is_one_line_too(monkeypatch, capfd):
    """An unreadable folder, a full disk: as root (CI) a folder cannot be
    made unreadable, so the system's refusal is simulated."""
    def refused(config):
        raise PermissionError(13, 'Permission denied', 'data/train/a')
    monkeypatch.setattr(train, 'load_data', refused)
    from gcm_lasagne import cli
    assert cli.main(['train', '--data', 'data', '--out', 'nowhere']) == 1
    assert capfd.readouterr().err == \
        'error: Permission denied: data/train/a\n'
