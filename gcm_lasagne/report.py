"""Table 3 (parameters, GCM/CNN time ratio, accuracy) beside the paper's,
and readable evaluation summaries."""
import csv
import json
import os
import time

import numpy as np
import lasagne
import theano
import theano.tensor as T

from . import paper
from .models import build_model
from .train import compile_train, default_config

TABLE3_MODELS = ('cnn', 'gcm', 'gcm-clip')


def count(model):
    net = build_model(model)
    return lasagne.layers.count_params(net['prob'], trainable=True)


def rounded(n):
    return '%dK' % round(n / 1000.)


def params_table():
    """Markdown table of trainable parameter counts and whether each still
    rounds to the paper's figure."""
    lines = ['| model | trainable parameters | rounded | paper |',
             '|---|---:|---:|---:|']
    ok = True
    for model in TABLE3_MODELS:
        n = count(model)
        expected = paper.TABLE3[model]['params']
        ok &= rounded(n) == expected
        lines.append('| %s | %d | %s | %s%s |' % (
            model, n, rounded(n), expected,
            '' if rounded(n) == expected else ' (MISMATCH)'))
    return '\n'.join(lines), ok


def seconds_per_batch(models, batch_size=128, steps=5, rounds=5):
    """Median seconds of one training step (forward, backward, momentum
    update) of each model on random data, on whatever device Theano uses.
    The models take turns, a block of `steps` steps each per round, so a
    change in the machine's load touches them alike."""
    rng = np.random.RandomState(0)
    X = rng.uniform(0, 1, (batch_size, 3, 32, 32)).astype(theano.config.floatX)
    y = rng.randint(0, 10, batch_size).astype('int32')
    steps_of = {}
    for model in models:
        net = build_model(model, input_var=T.tensor4('x'))
        steps_of[model] = compile_train(net, default_config(model=model))[0]
        steps_of[model](X, y)  # warm-up
    times = {model: [] for model in models}
    for _ in range(rounds):
        for model in models:
            t = time.time()
            for _ in range(steps):
                steps_of[model](X, y)
            times[model].append((time.time() - t) / steps)
    return {model: float(np.median(t)) for model, t in times.items()}


class ReportError(Exception):
    pass


# A run's recipe: what must agree between runs averaged in one row (the
# seed may differ, and the data folder may move between machines).
RECIPE_KEYS = tuple(paper.TABLE2) + ('model', 'train_subset', 'validation')


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise ReportError('cannot read %s (%s)' % (path, e))


def read_log(run):
    """log.csv of a run folder as a list of dicts of floats (epoch an int)."""
    path = os.path.join(run, 'log.csv')
    if not os.path.exists(path):
        return []
    try:
        with open(path) as f:
            return [dict({k: float(v) for k, v in r.items()},
                         epoch=int(r['epoch'])) for r in csv.DictReader(f)]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ReportError('%s is not a training log (%s)' % (path, e))


def find_runs(runs_dir):
    """Finished runs (a folder with config.json and metrics.json) below
    runs_dir, grouped by model: {model: [run, ...]}, each group sorted by
    seed. Which model and seed a run is comes from its config.json, so
    folder names are free (`reproduce` uses MODEL and MODEL-seedK)."""
    groups = {}
    if not os.path.isdir(runs_dir):
        return groups
    for name in sorted(os.listdir(runs_dir)):
        run = os.path.join(runs_dir, name)
        if not (os.path.isfile(os.path.join(run, 'config.json')) and
                os.path.isfile(os.path.join(run, 'metrics.json'))):
            continue
        config = read_json(os.path.join(run, 'config.json'))
        groups.setdefault(config.get('model'), []).append((run, config))
    for model, runs in groups.items():
        recipes = {json.dumps([c.get(k) for k in RECIPE_KEYS]) for _, c in runs}
        if len(recipes) > 1:
            raise ReportError('the %s runs in %s do not share one recipe (%s): '
                              'keep runs of other recipes in another --runs '
                              'folder' % (model, runs_dir,
                                          ', '.join(r for r, _ in runs)))
        runs.sort(key=lambda rc: (rc[1].get('seed', 0), rc[0]))
        groups[model] = [r for r, _ in runs]
    return groups


def data_name(config):
    """The data set a run used, as a name: 'cifar10' or the image
    folder's last path component (shipped configs hold just the name)."""
    data = config.get('data', 'cifar10')
    return os.path.basename(os.path.normpath(data))


def table3(runs_dir, timing=True):
    """Rows of Table 3: ours from the finished runs under runs_dir (mean,
    sample standard deviation and number of runs where a model has several
    seeds), the paper's beside them."""
    seconds = seconds_per_batch(TABLE3_MODELS) if timing else None
    groups = find_runs(runs_dir)
    rows = []
    for model in TABLE3_MODELS:
        theirs = paper.TABLE3[model]
        row = {'model': model, 'params': count(model),
               'paper_params': theirs['params'],
               'time_ratio': None, 'paper_time_ratio': theirs['time_ratio'],
               'accuracy': None, 'accuracy_std': None, 'runs': 0,
               'seeds': '', 'epochs': None, 'seconds_per_epoch': None,
               'data': None, 'paper_accuracy': theirs['accuracy']}
        if timing:
            row['time_ratio'] = round(seconds[model] / seconds['cnn'], 3)
        runs = groups.get(model, [])
        if runs:
            metrics = [read_json(os.path.join(r, 'metrics.json'))
                       for r in runs]
            configs = [read_json(os.path.join(r, 'config.json'))
                       for r in runs]
            acc = 100 * np.array([m['accuracy'] for m in metrics])
            epoch_seconds = [e['seconds'] for r in runs for e in read_log(r)]
            row.update(accuracy=round(float(acc.mean()), 2),
                       accuracy_std=(round(float(acc.std(ddof=1)), 2)
                                     if len(acc) > 1 else None),
                       runs=len(runs),
                       seeds=' '.join(str(c.get('seed')) for c in configs),
                       epochs=metrics[0]['epochs'],
                       data=data_name(configs[0]))
            if epoch_seconds:
                row['seconds_per_epoch'] = round(
                    float(np.median(epoch_seconds)), 1)
        rows.append(row)
    return rows


def _cell(value, fmt='%s'):
    return '-' if value is None else fmt % value


def _accuracy_cell(r):
    if r['accuracy'] is None:
        return '-'
    if r['runs'] > 1:
        return '%.2f ± %.2f (n=%d)' % (r['accuracy'], r['accuracy_std'],
                                       r['runs'])
    return '%.2f' % r['accuracy']


def write_table3(rows, results_dir):
    """Write table3.md and table3.csv; return the Markdown."""
    os.makedirs(results_dir, exist_ok=True)
    lines = ['| model | params | paper | time ratio (train) | paper | '
             'test accuracy % | epochs | s/epoch | data | paper |',
             '|---|---:|---:|---:|---:|---:|---:|---:|---|---:|']
    for r in rows:
        lines.append('| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |' % (
            r['model'], rounded(r['params']), r['paper_params'],
            _cell(r['time_ratio'], '%.2f'), _cell(r['paper_time_ratio']),
            _accuracy_cell(r), _cell(r['epochs']),
            _cell(r['seconds_per_epoch'], '%.0f'), _cell(r['data']),
            r['paper_accuracy']))
    text = '\n'.join(lines)
    notes = ['Time ratio: seconds per training batch of 128, GCM over CNN, '
             'measured on %s.' % theano.config.device,
             's/epoch: median seconds of an epoch (training and evaluation) '
             'in the runs\' logs.',
             'test accuracy: mean ± sample standard deviation over n runs '
             '(seeds) where a model has several.',
             "Paper: Table 3, on the official CIFAR-10; 'data' names the "
             'data set each of our runs used.']
    with open(os.path.join(results_dir, 'table3.md'), 'w') as f:
        f.write(text + '\n\n' + '\n'.join(notes) + '\n')
    with open(os.path.join(results_dir, 'table3.csv'), 'w', newline='') as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return text


def metrics_text(metrics, loss):
    classes = metrics['classes']
    width = max(len(c) for c in classes)
    lines = ['accuracy %.2f%%  (loss %.4f)' % (100 * metrics['accuracy'],
                                               loss), '', 'per class:']
    for c in classes:
        lines.append('  %-*s %6.2f%%' % (width, c,
                                         100 * metrics['per_class_accuracy'][c]))
    lines += ['', 'confusion matrix (rows: true class, columns: predicted):',
              ' ' * (width + 2) + ' '.join('%5s' % c[:5] for c in classes)]
    for c, row in zip(classes, metrics['confusion_matrix']):
        lines.append('  %-*s ' % (width, c) + ' '.join('%5d' % n for n in row))
    return '\n'.join(lines)
