"""Output in any locale: class and file names that the terminal cannot
encode are printed escaped, after the work is done as before it, under a
strict ASCII and a strict UTF-8 stdout."""
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from gcm_lasagne import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# an accent, a CJK name, and bytes that are no UTF-8 at all (Linux file
# names are bytes; Python hands them over as lone surrogates)
CLASSES = ['caf\xe9', '\u732b', os.fsdecode(b'n\xffo')]


@pytest.fixture(scope='module')
def model(tmp_path_factory):
    root = tmp_path_factory.mktemp('names')
    rng = np.random.RandomState(0)
    for split, n in (('train', 4), ('test', 2)):
        for c in CLASSES:
            os.makedirs(os.path.join(str(root), 'data', split, c))
            for i in range(n):
                Image.fromarray(rng.randint(0, 255, (8, 8, 3)).astype(
                    np.uint8)).save(os.path.join(str(root), 'data', split, c,
                                                 '%d.png' % i))
    out = os.path.join(str(root), 'run')
    assert cli.main(['train', '--data', os.path.join(str(root), 'data'),
                     '--out', out, '--epochs', '1', '--batch-size', '4',
                     '--pad', '1']) == 0
    return os.path.join(out, 'model.npz')


def child(encoding, *args):
    env = dict(os.environ, PYTHONIOENCODING=encoding)
    return subprocess.run([sys.executable, 'run_cifar10.py'] + list(args),
                          cwd=ROOT, env=env, capture_output=True)


@pytest.mark.parametrize('encoding, shown', [
    ('ascii:strict', [b'caf\\xe9', b'\\u732b', b'n\\udcffo']),
    ('utf-8:strict', ['caf\xe9'.encode(), '\u732b'.encode(), b'n\\udcffo']),
])
def test_class_names_print_escaped_in_any_encoding(model, encoding, shown):
    done = child(encoding, 'evaluate', model)
    assert done.returncode == 0, done.stderr
    assert b'Traceback' not in done.stderr
    for name in shown:
        assert name in done.stdout


def test_an_error_naming_an_unprintable_file_is_one_line(tmp_path):
    missing = os.path.join(str(tmp_path), 'mod\xe8le.npz')
    done = child('ascii:strict', 'evaluate', missing)
    assert done.returncode == 1
    assert done.stderr.count(b'\n') == 1 and b'mod\\xe8le.npz' in done.stderr
