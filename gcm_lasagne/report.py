"""Table 3 (parameters, GCM/CNN time ratio, accuracy) beside the paper's,
and readable evaluation summaries."""
import csv
import io
import json
import os
import sys
import time

import numpy as np
import lasagne
import scipy.stats
import theano
import theano.tensor as T

from . import archives, atomic, paper, resnet, runfolder, train
from .models import MODELS, build_model
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
RECIPE_KEYS = tuple(paper.TABLE2) + ('train_subset', 'validation')


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise ReportError('cannot read %s (%s)' % (path, e))


def read_log(run):
    """log.csv of a run folder as a list of dicts of floats (epoch an int):
    its whole rows, epochs 1, 2, ... in order (runfolder.read_log_rows)."""
    try:
        rows, _ = runfolder.read_log_rows(os.path.join(run, 'log.csv'))
        return [dict({k: float(v) for k, v in r.items()
                      if k in runfolder.LOG_FIELDS}, epoch=int(r['epoch']))
                for r in rows]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ReportError('%s is not a training log (%s)'
                          % (os.path.join(run, 'log.csv'), e))


def _field(path, record, key, ok, what):
    value = record.get(key) if isinstance(record, dict) else None
    if isinstance(value, bool) or not ok(value):
        raise ReportError('%s: %s must be %s, not %r' % (path, key, what,
                                                         value))
    return value


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def check_run(run):
    """A finished run's config.json and metrics.json, checked for every
    field the tables and curves read; ReportError names the file and the
    field."""
    config_path = os.path.join(run, 'config.json')
    metrics_path = os.path.join(run, 'metrics.json')
    config, metrics = read_json(config_path), read_json(metrics_path)
    for path, record in ((config_path, config), (metrics_path, metrics)):
        if not isinstance(record, dict):
            raise ReportError('%s is not a JSON object' % path)
    _field(config_path, config, 'model', lambda v: v in MODELS,
           'one of %s' % ', '.join(MODELS))
    _field(config_path, config, 'seed', _is_int, 'an integer')
    _field(config_path, config, 'lr_steps', lambda v: isinstance(
        v, list) and all(_is_int(e) for e in v), 'a list of epochs')
    _field(config_path, config, 'lr_factor', lambda v: isinstance(
        v, (int, float)) and 0 < v <= 1, 'a number in (0, 1]')
    _field(config_path, config, 'data', lambda v: isinstance(v, str) and v,
           'a data set name or folder')
    _field(metrics_path, metrics, 'accuracy', lambda v: isinstance(
        v, (int, float)) and 0 <= v <= 1, 'a fraction in [0, 1]')
    _field(metrics_path, metrics, 'epochs', lambda v: _is_int(v) and v >= 1,
           'a positive integer')
    read_log(run)
    return config, metrics


def recipe_label(config):
    """'' for Table 2 as printed; else the recipe's name where it is not
    Table 2 and every value that differs from the named recipe, e.g.
    'weight decay 0.0001' or 'he2016'."""
    name = config.get('recipe', 'table2')
    base = dict(train.RECIPES.get(name, paper.TABLE2) if isinstance(
        name, str) else paper.TABLE2, train_subset=0, validation=0)
    parts = [] if name == 'table2' else [str(name)]
    for key in RECIPE_KEYS:
        value, usual = config.get(key), base[key]
        if isinstance(usual, tuple):
            usual = list(usual)
        if value != usual:
            if isinstance(value, list):
                value = ' '.join(map(str, value)) or 'none'
            parts.append('%s %s' % (key.replace('_', ' '), value))
    return ', '.join(parts)


def group_name(model, label):
    return '%s (%s)' % (model, label) if label else model


def _warn(text):
    sys.stderr.write(text + '\n')


def find_runs(runs_dirs, warn=_warn):
    """Finished runs (a folder with config.json and metrics.json) below
    runs_dirs (one folder or a list of them), grouped by model and recipe:
    {(model, recipe_label): [run, ...]}, each group sorted by seed. Which
    model, recipe and seed a run is comes from its config.json, so folder
    names are free (`reproduce` uses MODEL and MODEL-seedK); runs of
    different recipes are never averaged. A run whose files cannot be read
    is skipped with a warning."""
    if isinstance(runs_dirs, str):
        runs_dirs = [runs_dirs]
    groups = {}
    # a folder named twice is read once: its runs must not count twice
    for runs_dir in dict.fromkeys(map(os.path.realpath, runs_dirs)):
        if not os.path.isdir(runs_dir):
            continue
        for name in sorted(os.listdir(runs_dir)):
            run = os.path.join(runs_dir, name)
            if not (os.path.isfile(os.path.join(run, 'config.json')) and
                    os.path.isfile(os.path.join(run, 'metrics.json'))):
                continue
            try:
                config, _ = check_run(run)
            except ReportError as e:  # the other runs are still tabulated
                warn('warning: skipped %s: %s' % (run, e))
                continue
            key = (config['model'], recipe_label(config))
            groups.setdefault(key, []).append((run, config))
    for key, runs in groups.items():
        runs.sort(key=lambda rc: (rc[1].get('seed', 0), rc[0]))
        groups[key] = [r for r, _ in runs]
    return groups


def data_name(config):
    """The data set a run used, as a name: 'cifar10' or the image
    folder's (or its archive's) last path component without .tar.gz
    (shipped configs hold just the name)."""
    data = config.get('data', 'cifar10')
    return archives.strip_suffix(os.path.basename(os.path.normpath(data)))


def published(model):
    """(parameters as printed, accuracy %, where) of the paper's models and
    of the controls, or Nones for a model with no published figure."""
    if model in paper.TABLE3:
        return (paper.TABLE3[model]['params'],
                paper.TABLE3[model]['accuracy'], 'Table 3')
    if model in resnet.PUBLISHED:
        theirs = resnet.PUBLISHED[model]
        return theirs['params'], theirs['accuracy'], theirs['source']
    return None, None, None


def _runs_columns(runs):
    """Accuracy (mean, sample sd, n), seeds, epochs, s/epoch (each run's
    median, in seed order) and data of a group of runs of one recipe."""
    metrics = [read_json(os.path.join(r, 'metrics.json')) for r in runs]
    configs = [read_json(os.path.join(r, 'config.json')) for r in runs]
    acc = 100 * np.array([m['accuracy'] for m in metrics])
    # per run: runs of one model ran on different processors, so a pooled
    # median would describe none of them
    epoch_seconds = [[e['seconds'] for e in read_log(r)] for r in runs]
    return dict(accuracies=' '.join('%.2f' % a for a in acc),
                accuracy=round(float(acc.mean()), 2),
                accuracy_std=(round(float(acc.std(ddof=1)), 2)
                              if len(acc) > 1 else None),
                runs=len(runs),
                seeds=' '.join(str(c.get('seed')) for c in configs),
                epochs=metrics[0]['epochs'], data=data_name(configs[0]),
                seconds_per_epoch=' '.join('%.0f' % np.median(t) if t else '-'
                                           for t in epoch_seconds))


def table3(runs_dirs, timing=True, groups=None):
    """Rows of Table 3: the paper's models with Table 2's recipe (kind
    'paper'), then every other group of finished runs under runs_dirs: the
    paper's models with another recipe ('variant') and the controls
    ('control'). Each row: ours (mean, sample standard deviation and number
    of runs where there are several seeds) beside the published figure,
    and their difference."""
    seconds = seconds_per_batch(TABLE3_MODELS) if timing else None
    if groups is None:  # find_runs(runs_dirs), if the caller has not
        groups = find_runs(runs_dirs)
    keys = [(model, '') for model in TABLE3_MODELS]
    keys += sorted(set(groups) - set(keys),
                   key=lambda k: (k[0] not in paper.TABLE3, str(k[0]), k[1]))
    rows = []
    for model, label in keys:
        params, accuracy, source = published(model)
        row = {'name': group_name(model, label), 'model': model,
               'recipe': label,
               'kind': ('paper' if model in paper.TABLE3 and not label else
                        'variant' if model in paper.TABLE3 else 'control'),
               'params': count(model) if model in MODELS else None,
               'paper_params': params, 'time_ratio': None,
               'paper_time_ratio': None, 'accuracies': '',
               'accuracy': None, 'accuracy_std': None, 'runs': 0,
               'seeds': '', 'epochs': None,
               'seconds_per_epoch': None, 'data': None,
               'paper_accuracy': accuracy, 'difference': None,
               'source': source}
        if row['kind'] == 'paper':
            row['paper_time_ratio'] = paper.TABLE3[model]['time_ratio']
            if timing:
                row['time_ratio'] = round(seconds[model] / seconds['cnn'], 3)
        if (model, label) in groups:
            row.update(_runs_columns(groups[model, label]))
            if accuracy is not None:
                row['difference'] = round(row['accuracy'] - accuracy, 2)
        rows.append(row)
    return rows


def welch(a, b, alpha=0.05):
    """Welch's t-test of mean(a) - mean(b) for two small samples of unequal
    variance: the difference, its standard error, t, the Welch-Satterthwaite
    degrees of freedom, the two-sided p, and the 1 - alpha confidence
    interval of the difference (low, high): "level" says how level only with
    the interval beside it. None with fewer than two values in either
    sample, or none of them spread (no variance to estimate)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2:
        return None
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    if va + vb == 0:
        return None
    difference, se = a.mean() - b.mean(), np.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    t = difference / se
    half = se * scipy.stats.t.ppf(1 - alpha / 2, df)
    return {'difference': float(difference), 'se': float(se), 't': float(t),
            'df': float(df), 'p': float(2 * scipy.stats.t.sf(abs(t), df)),
            'low': float(difference - half), 'high': float(difference + half)}


def gcm_minus_cnn(rows, alpha=0.05, recipe=''):
    """The line the paper's claim ("GCM costs no accuracy") needs: GCM's
    accuracy minus the CNN's, both with `recipe` (Table 2's by default),
    its standard error and 1 - alpha interval, and whether the difference
    is distinguishable from zero at these numbers of runs (Welch's t,
    two-sided, at `alpha`)."""
    both = {r['model']: r for r in rows if r['recipe'] == recipe and
            r['model'] in ('gcm', 'cnn') and r['runs']}
    name = group_name('GCM - CNN', recipe)
    if len(both) < 2:
        return '%s: needs finished runs of both.' % name
    a = [float(v) for v in both['gcm']['accuracies'].split()]
    b = [float(v) for v in both['cnn']['accuracies'].split()]
    test = welch(a, b, alpha)
    if test is None:
        return ('%s: %+.2f points (n = %d and %d); a standard error '
                'needs at least two runs (seeds) of each, with some spread.'
                % (name, np.mean(a) - np.mean(b), len(a), len(b)))
    return ("%s: %+.2f ± %.2f points (standard error; %g%% interval %+.2f "
            "to %+.2f); Welch's t = %.2f, df = %.1f, two-sided p = %.3f: %s "
            'from zero at n = %d and %d (%g%% level).' % (
                name, test['difference'], test['se'], 100 * (1 - alpha),
                test['low'], test['high'], test['t'], test['df'], test['p'],
                'distinguishable' if test['p'] < alpha else
                'not distinguishable', len(a), len(b), 100 * alpha))


def parity_lines(rows):
    """GCM - CNN with Table 2's recipe, then with each other recipe that
    both have finished runs of: whether the paper's parity survives, say,
    a weight penalty."""
    ran = {(r['model'], r['recipe']) for r in rows if r['runs']}
    others = [recipe for model, recipe in sorted(ran)
              if model == 'gcm' and recipe and ('cnn', recipe) in ran]
    return [gcm_minus_cnn(rows)] + [gcm_minus_cnn(rows, recipe=recipe)
                                    for recipe in others]


def less_the_control(rows):
    """A line for each control with a finished run: its difference from
    its published figure estimates what this data costs a network of that
    size (it ran the published recipe); each other row's difference from
    the paper with that subtracted is what remains for the code, the
    recipe or chance. Subtraction only: one control run gives no spread
    (a few tenths of a point between seeds in such runs)."""
    lines = []
    for control in rows:
        if control['kind'] != 'control' or control['difference'] is None:
            continue
        rest = ['%s %+.2f' % (r['name'], r['difference'] -
                              control['difference'])
                for r in rows if r['kind'] != 'control' and
                r['difference'] is not None]
        lines.append(
            'Less what the data costs, as %s estimates it (%+.2f points from '
            'its published figure, n = %d): %s points from the paper.' % (
                control['name'], control['difference'], control['runs'],
                ', '.join(rest) or 'no run of the paper\'s models yet'))
    return lines


def _cell(value, fmt='%s'):
    return '-' if value is None else fmt % value


def _accuracy_cell(r):
    if r['accuracy'] is None:
        return '-'
    if r['runs'] > 1:
        return '%.2f ± %.2f (n=%d)' % (r['accuracy'], r['accuracy_std'],
                                       r['runs'])
    return '%.2f (n=1)' % r['accuracy']  # one run: no spread to give


def _params_cell(r):
    return '-' if r['params'] is None else rounded(r['params'])


def write_table3(rows, results_dir):
    """Write table3.md, table3.csv and summary.md; return the Markdown:
    Table 3, and below it, apart, the variants and controls."""
    os.makedirs(results_dir, exist_ok=True)
    lines = ['| model | params | paper | time ratio (train) | paper | '
             'test accuracy % | epochs | s/epoch | data | paper | '
             'difference |',
             '|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|']
    for r in rows:
        if r['kind'] != 'paper':
            continue
        lines.append('| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | '
                     '%s |' % (
                         r['model'], _params_cell(r), r['paper_params'],
                         _cell(r['time_ratio'], '%.2f'),
                         _cell(r['paper_time_ratio']), _accuracy_cell(r),
                         _cell(r['epochs']),
                         _cell(r['seconds_per_epoch']),
                         _cell(r['data']), r['paper_accuracy'],
                         _cell(r['difference'], '%+.2f')))
    lines += [''] + parity_lines(rows)
    others = [r for r in rows if r['kind'] != 'paper']
    if others:
        lines += ['', "Variants (the paper's models, another recipe) and "
                  'controls (not in the paper):', '',
                  '| run | kind | params | published | test accuracy % | '
                  'epochs | s/epoch | data | published | difference | '
                  'published in |',
                  '|---|---|---:|---:|---:|---:|---:|---|---:|---:|---|']
        for r in others:
            lines.append('| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s '
                         '| %s |' % (
                             r['name'], r['kind'], _params_cell(r),
                             _cell(r['paper_params']), _accuracy_cell(r),
                             _cell(r['epochs']),
                             _cell(r['seconds_per_epoch']),
                             _cell(r['data']), _cell(r['paper_accuracy']),
                             _cell(r['difference'], '%+.2f'),
                             _cell(r['source'])))
        control_lines = less_the_control(rows)
        if control_lines:
            lines += [''] + control_lines
    text = '\n'.join(lines)
    notes = ['Time ratio: seconds per training batch of 128, GCM over CNN, '
             'measured on %s.' % theano.config.device,
             's/epoch: median seconds of an epoch (training and evaluation) '
             'in each run\'s log, in seed order.',
             'test accuracy: mean ± sample standard deviation over n runs '
             '(seeds) where a model has several.',
             "Paper: Table 3, on the official CIFAR-10; 'data' names the "
             'data set each of our runs used; difference: ours minus the '
             'published figure, in points.',
             'A variant names what its recipe changes from Table 2; a '
             'variant\'s published figure is the paper\'s for its model '
             'with Table 2.']
    atomic.write_text(os.path.join(results_dir, 'table3.md'),
                      text + '\n\n' + '\n'.join(notes) + '\n')
    table = io.StringIO()
    writer = csv.DictWriter(table, list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic.write_text(os.path.join(results_dir, 'table3.csv'),
                      table.getvalue())
    atomic.write_text(os.path.join(results_dir, 'summary.md'),
                      summary(rows) + '\n')
    return text


def summary(rows):
    """The short form for a front page: every row with a finished run,
    ours beside the published figure and their difference, then the lines
    the comparison needs (GCM - CNN, and what remains once a control has
    estimated what the data costs). No time ratio: that is measured on
    whatever machine runs `table3`, the rest is read from the runs (s/epoch:
    the median of the run's log, on the machine that trained it)."""
    lines = ['| run | kind | params | test accuracy %, here | published | '
             'difference | published in | s/epoch |',
             '|---|---|---:|---:|---:|---:|---|---:|']
    for r in rows:
        if r['accuracy'] is None:
            continue
        lines.append('| %s | %s | %s | %s | %s | %s | %s | %s |' % (
            r['name'], r['kind'], _params_cell(r), _accuracy_cell(r),
            _cell(r['paper_accuracy']), _cell(r['difference'], '%+.2f'),
            _cell(r['source']), _cell(r['seconds_per_epoch'])))
    return '\n'.join(lines + [''] + parity_lines(rows) +
                     less_the_control(rows))


def metrics_text(metrics, loss):
    classes = metrics['classes']
    width = max(len(c) for c in classes)
    lines = ['accuracy %.2f%%  (loss %.4f)' % (100 * metrics['accuracy'],
                                               loss), '', 'per class:']
    for c in classes:
        accuracy = metrics['per_class_accuracy'][c]
        lines.append('  %-*s %6.2f%%' % (width, c, 100 * accuracy))
    lines += ['', 'confusion matrix (rows: true class, columns: predicted):',
              ' ' * (width + 2) + ' '.join('%5s' % c[:5] for c in classes)]
    for c, row in zip(classes, metrics['confusion_matrix']):
        lines.append('  %-*s ' % (width, c) + ' '.join('%5d' % n for n in row))
    return '\n'.join(lines)
