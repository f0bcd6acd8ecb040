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


def table3(runs_dir, timing=True):
    """Rows of Table 3: ours from the runs found under runs_dir, the
    paper's beside them."""
    seconds = seconds_per_batch(TABLE3_MODELS) if timing else None
    rows = []
    for model in TABLE3_MODELS:
        theirs = paper.TABLE3[model]
        row = {'model': model, 'params': count(model),
               'paper_params': theirs['params'],
               'time_ratio': None, 'paper_time_ratio': theirs['time_ratio'],
               'accuracy': None, 'epochs': None,
               'paper_accuracy': theirs['accuracy']}
        if timing:
            row['time_ratio'] = round(seconds[model] / seconds['cnn'], 3)
        metrics = os.path.join(runs_dir, model, 'metrics.json')
        if os.path.exists(metrics):
            with open(metrics) as f:
                m = json.load(f)
            row['accuracy'] = round(100 * m['accuracy'], 2)
            row['epochs'] = m['epochs']
        rows.append(row)
    return rows


def _cell(value, fmt='%s'):
    return '-' if value is None else fmt % value


def write_table3(rows, results_dir):
    """Write table3.md and table3.csv; return the Markdown."""
    os.makedirs(results_dir, exist_ok=True)
    lines = ['| model | params | paper | time ratio (train) | paper | '
             'test accuracy % | epochs | paper |',
             '|---|---:|---:|---:|---:|---:|---:|---:|']
    for r in rows:
        lines.append('| %s | %s | %s | %s | %s | %s | %s | %s |' % (
            r['model'], rounded(r['params']), r['paper_params'],
            _cell(r['time_ratio'], '%.2f'), _cell(r['paper_time_ratio']),
            _cell(r['accuracy'], '%.2f'), _cell(r['epochs']),
            r['paper_accuracy']))
    text = '\n'.join(lines)
    with open(os.path.join(results_dir, 'table3.md'), 'w') as f:
        f.write(text + '\n\nTime ratio: seconds per training batch of 128, '
                'GCM over CNN, measured on %s.\n' % theano.config.device)
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
