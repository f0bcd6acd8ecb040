"""Issue 10: every model folder that ships under models/ loads, has Table
1's parameter count for its kind, names its data set rather than a folder
of the machine it ran on, and its metrics agree with its log."""
import os

import lasagne
import numpy as np
import pytest

from gcm_lasagne import checkpoint, paper, report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = sorted(os.path.join(ROOT, 'models', name)
                for name in os.listdir(os.path.join(ROOT, 'models'))
                if os.path.isdir(os.path.join(ROOT, 'models', name)))
FILES = ('model.npz', 'config.json', 'log.csv', 'metrics.json', 'README.md')


def test_something_ships():
    assert MODELS


def test_the_shipped_models_stay_small():
    size = sum(os.path.getsize(os.path.join(folder, f))
               for folder in MODELS for f in os.listdir(folder))
    assert size < 3 * 1024 ** 2


@pytest.mark.parametrize('folder', MODELS, ids=os.path.basename)
def test_shipped_model(folder):
    assert all(os.path.isfile(os.path.join(folder, f)) for f in FILES)
    net, meta, _ = checkpoint.load(os.path.join(folder, 'model.npz'))
    kind = meta['model']
    count = lasagne.layers.count_params(net['prob'], trainable=True)
    assert count == paper.PARAMS[kind] if kind in paper.PARAMS else count > 0
    config = report.read_json(os.path.join(folder, 'config.json'))
    assert config == meta['config']
    assert os.sep not in config['data']  # a data set's name, not a path
    metrics = report.read_json(os.path.join(folder, 'metrics.json'))
    last = report.read_log(folder)[-1]
    assert last['epoch'] == metrics['epochs'] == config['epochs']
    assert abs(last['eval_acc'] - metrics['accuracy']) <= 5e-6
    assert metrics['params'] == count
    m = np.array(metrics['confusion_matrix'])
    assert m.shape == (len(meta['classes']),) * 2
    assert abs(np.trace(m) / m.sum() - metrics['accuracy']) < 1e-9
    assert list(metrics['per_class_accuracy']) == meta['classes']
