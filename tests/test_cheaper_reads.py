"""benchmarks/cheaper_reads.py cannot silently break: it runs here on a
tiny image folder and an untrained 8x8 GCM (no timing is asserted, only
that it measured both ways and that they classify alike)."""
import os
import subprocess
import sys

import numpy as np
from PIL import Image

import gcm_lasagne  # noqa: F401  (configures Theano)
import lasagne

from gcm_lasagne import checkpoint, train
from gcm_lasagne.models import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ['a', 'b']


def test_it_measures_both_ways_and_they_agree(tmp_path):
    rng = np.random.RandomState(0)
    for split, count in (('train', 3), ('test', 2)):
        for c in CLASSES:
            os.makedirs(str(tmp_path / 'data' / split / c))
            for i in range(count):
                Image.fromarray(rng.randint(0, 256, (8, 8, 3)).astype(
                    np.uint8)).save(str(tmp_path / 'data' / split / c
                                        / ('%d.png' % i)))
    lasagne.random.set_rng(np.random.RandomState(1))
    model = str(tmp_path / 'model.npz')
    checkpoint.save(model, build_model('gcm', 2, (3, 8, 8)), {
        'model': 'gcm', 'classes': CLASSES, 'input_shape': [3, 8, 8],
        'config': train.default_config(data='unused', download=False)})
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, 'benchmarks', 'cheaper_reads.py'),
         '--data', str(tmp_path / 'data'), '--model', model, '--images', '3',
         '--repeats', '2'], capture_output=True, text=True, cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines()
            if line.startswith('| decode') or line.startswith('| predict')]
    assert [r.split(' | ')[0] for r in rows] == [
        '| decode test only (now), s', '| decode train + test (before), s',
        '| predict scores only (now), images/s',
        '| predict with CWM and CCM (before), images/s']
    assert all(len(r.split(' | ')[3].split(', ')) == 2 for r in rows)
    assert '3 test images classified; both ways give the same labels: yes' \
        in done.stdout
