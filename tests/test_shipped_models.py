"""Every model folder that ships under models/ loads, has Table 1's
parameter count for its kind, names its data set rather than a folder of
the machine it ran on, and its metrics agree with its log; so does the
evidence of every run in runs-finished/ (the runs whose weights do not
ship); and the README's table is what `table3` makes of them."""
import os

import lasagne
import numpy as np
import pytest

from gcm_lasagne import checkpoint, paper, report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = ('models', 'runs-finished')


def folders(where):
    top = os.path.join(ROOT, where)
    return sorted(os.path.join(top, name) for name in os.listdir(top)
                  if os.path.isdir(os.path.join(top, name)))


MODELS = folders('models')
FINISHED = folders('runs-finished')


def test_something_ships():
    assert MODELS


def test_the_shipped_models_stay_small():
    size = sum(os.path.getsize(os.path.join(folder, f))
               for folder in MODELS for f in os.listdir(folder))
    assert size < 3 * 1024 ** 2


@pytest.mark.parametrize('folder', MODELS + FINISHED,
                         ids=lambda f: os.path.relpath(f, ROOT))
def test_evidence(folder):
    """A run's config, log and metrics agree with each other."""
    assert os.path.isfile(os.path.join(folder, 'NOTES.md'))
    config, metrics = report.check_run(folder)
    assert os.sep not in config['data']  # a data set's name, not a path
    last = report.read_log(folder)[-1]
    assert last['epoch'] == metrics['epochs'] == config['epochs']
    assert abs(last['eval_acc'] - metrics['accuracy']) <= 5e-6
    m = np.array(metrics['confusion_matrix'])
    assert m.shape == (len(metrics['classes']),) * 2
    assert abs(np.trace(m) / m.sum() - metrics['accuracy']) < 1e-9
    assert list(metrics['per_class_accuracy']) == metrics['classes']


@pytest.mark.parametrize('folder', MODELS, ids=os.path.basename)
def test_shipped_model(folder):
    assert os.path.isfile(os.path.join(folder, 'README.md'))
    net, meta, _ = checkpoint.load(os.path.join(folder, 'model.npz'))
    kind = meta['model']
    count = lasagne.layers.count_params(net['prob'], trainable=True)
    assert count == paper.PARAMS[kind] if kind in paper.PARAMS else count > 0
    metrics = report.read_json(os.path.join(folder, 'metrics.json'))
    assert metrics['params'] == count
    assert report.read_json(os.path.join(folder, 'config.json')) == \
        meta['config']
    assert list(metrics['per_class_accuracy']) == meta['classes']


def test_the_readme_table_is_what_table3_makes_of_them():
    """README.md carries `table3 models runs-finished`'s summary.md
    verbatim, so its figures cannot drift from the runs that ship."""
    rows = report.table3([os.path.join(ROOT, f) for f in SHIPPED],
                         timing=False)
    with open(os.path.join(ROOT, 'README.md'), encoding='utf-8') as f:
        readme = f.read()
    assert report.summary(rows) in readme, (
        'README.md lacks the summary of the runs that ship: run '
        '`run_cifar10.py table3 --no-timing models runs-finished` and paste '
        'results/summary.md')
