"""The `faithfulness` command: the same test images for every model, every
attribution method that applies to each (gcm_lasagne/attribution.py), every
metric of gcm_lasagne/faithfulness.py, then the tables (Markdown, CSV), the
curves (PNG, PDF) and the per-image numbers (.npz) under one folder."""
import csv
import io
import os
import sys
import time

import numpy as np

from . import atomic
from . import attribution as attr
from .batches import to_float
from .faithfulness import (ROAD_FRACTIONS, ROAD_NOISE, area,
                           baseline_images, fresh_network,
                           perturbation_curves, randomisation_check, road)

# The command's defaults. The randomisation check recomputes every map
# once per layer (15 for GCM, with 32-step IG): 25 images keep it to
# about a fifth of the time of the other metrics on 1,000 images.
DEFAULTS = dict(images=1000, target='predicted', baseline='blur', steps=16,
                ig_steps=32, randomisation_images=25, seed=0)

# ------------------------------------------------------------ one model

class Progress(object):
    """One line on stderr, rewritten in place."""

    def __init__(self, stream=sys.stderr):
        self.stream, self.t0, self.width = stream, time.time(), 0

    def __call__(self, text):
        line = '[%5.0f s] %s' % (time.time() - self.t0, text)
        self.stream.write('\r' + line.ljust(self.width))
        self.stream.flush()
        self.width = len(line)

    def done(self):
        self.stream.write('\n')
        self.stream.flush()


def evaluate_model(attribution, X, targets, methods,
                   baseline=DEFAULTS['baseline'], steps=DEFAULTS['steps'],
                   fill_mean=None,
                   randomisation_images=DEFAULTS['randomisation_images'],
                   fresh_net=None, seed=0, progress=None, chunk=32):
    """Every metric for every method on one model. Returns a dict:
    per method, the per-image arrays 'deletion', 'insertion' (B, steps+1),
    'deletion_auc', 'insertion_auc' (B,), 'road_morf', 'road_lerf' (B, F),
    for IG 'ig_completeness' (B,); 'randomisation' {method: (L, M)} with
    'layers'; and 'seconds' {(method, part): time}."""
    progress = progress or (lambda text: None)
    X = to_float(X)
    fill = baseline_images(X, baseline, fill_mean)
    prob_fn = lambda x: attribution.scores(x)[1]  # noqa: E731
    score_fn = lambda x: attribution.scores(x)[0]  # noqa: E731
    out, seconds = {}, {}
    for m in methods:
        r, parts = {}, []
        for i in range(0, len(X), chunk):
            sl = slice(i, i + chunk)
            progress('%s: %d/%d images' % (m, i, len(X)))
            t0 = time.time()
            if m == 'integrated-gradients':
                maps, error = attribution.integrated_gradients(X[sl],
                                                               targets[sl])
                parts.append({'ig_completeness': error})
            else:
                maps = attribution.maps(m, X[sl], targets[sl])
                parts.append({})
            t1 = time.time()
            d, ins = perturbation_curves(prob_fn, X[sl], targets[sl], maps,
                                         fill[sl], steps, seed)
            t2 = time.time()
            morf, lerf = road(score_fn, X[sl], targets[sl], maps, seed=seed)
            t3 = time.time()
            parts[-1].update(deletion=d, insertion=ins, road_morf=morf,
                             road_lerf=lerf)
            for part, dt in (('maps', t1 - t0), ('deletion+insertion',
                                                 t2 - t1), ('road', t3 - t2)):
                seconds[m, part] = seconds.get((m, part), 0.0) + dt
        for key in parts[0]:
            r[key] = np.concatenate([p[key] for p in parts])
        r['deletion_auc'] = area(r['deletion'])
        r['insertion_auc'] = area(r['insertion'])
        out[m] = r
    if randomisation_images and fresh_net is not None:
        M = min(randomisation_images, len(X))
        t0 = time.time()
        layers, rho = randomisation_check(
            attribution, fresh_net, X[:M], targets[:M], methods,
            lambda k, n: progress('randomisation: %d/%d layers' % (k, n)))
        seconds['all', 'randomisation'] = time.time() - t0
        out['layers'], out['randomisation'] = layers, rho
    out['seconds'] = seconds
    return out


# ------------------------------------------------------------ the command

# (column, per-image key, what is better) of the summary table
METRICS = (('deletion AUC', 'deletion_auc', 'lower'),
           ('insertion AUC', 'insertion_auc', 'higher'),
           ('ROAD MoRF', 'road_morf', 'lower'),
           ('ROAD LeRF', 'road_lerf', 'higher'),
           ('rand. top layer', 'rand_top', 'nearer 0'),
           ('rand. all layers', 'rand_all', 'nearer 0'))


def choose_images(total, count, seed=0):
    """The same test images for every model: a seeded random `count` of
    the `total`, in test-set order, correctly classified or not."""
    return np.sort(np.random.RandomState(seed).permutation(total)[:count])


def per_image(result, method):
    """{key: (B,) per-image number} of one method, as the table uses."""
    r = result[method]
    out = {key: np.asarray(r[key], np.float64).reshape(len(r[key]), -1)
           .mean(axis=1) for _, key, _ in METRICS if key in r}
    if 'randomisation' in result:
        out['rand_top'] = result['randomisation'][method][0]
        out['rand_all'] = result['randomisation'][method][-1]
    return out


def mean_se(values):
    values = np.asarray(values, np.float64)
    se = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 \
        else float('nan')
    return values.mean(), se


def evaluate(models, X, y, methods=None, progress=None, **options):
    """Every applicable method of every model on the same images.
    models: [(tag, net, meta)]. Returns (chosen test-set indices, their
    labels, {tag: result}), where each result has evaluate_model's keys
    plus 'predicted', 'targets', 'correct' (B,). options: DEFAULTS'
    keys."""
    o = dict(DEFAULTS, **options)
    chosen = choose_images(len(X), o['images'], o['seed'])
    X, y = to_float(X[chosen]), np.asarray(y)[chosen].astype(np.int32)
    fill_mean = X.mean(axis=(0, 2, 3))
    results = {}
    for tag, net, meta in models:
        a = attr.Attribution(net, ig_steps=o['ig_steps'], seed=o['seed'],
                             name=tag)
        use = [m for m in (methods or a.methods) if m in a.methods]
        predicted = a.scores(X)[0].argmax(axis=1).astype(np.int32)
        targets = predicted if o['target'] == 'predicted' else y
        say = (lambda text, tag=tag: progress('%s: %s' % (tag, text))) \
            if progress else None
        t0 = time.time()
        r = evaluate_model(a, X, targets, use, o['baseline'], o['steps'],
                           fill_mean, o['randomisation_images'],
                           fresh_network(meta, o['seed']), o['seed'], say)
        r.update(predicted=predicted, targets=targets,
                 correct=predicted == y, methods=use,
                 total_seconds=time.time() - t0)
        results[tag] = r
    return chosen, y, results


def _cell(values, digits=3):
    mean, se = mean_se(values)
    return '%.*f ± %.*f' % (digits, mean, digits, se)


def write_results(out_dir, chosen, labels, results, settings):
    """faithfulness.md, faithfulness.csv, randomisation.csv, curves.png and
    .pdf, per_image.npz under out_dir. Returns the paths. Every file is
    made in memory before the first is written (a plot that fails leaves
    the folder as it was), each is written all or nothing (atomic.py), and
    faithfulness.md, which describes the others, last."""
    os.makedirs(out_dir, exist_ok=True)
    paths = [os.path.join(out_dir, name) for name in (
        'faithfulness.md', 'faithfulness.csv', 'randomisation.csv',
        'curves.png', 'curves.pdf', 'per_image.npz')]
    md, table_csv, rand_csv, png, pdf, npz = paths

    table = io.StringIO()
    w = csv.writer(table)
    w.writerow(['model', 'method', 'images'] + [
        '%s %s' % (key, s) for _, key, _ in METRICS for s in ('mean', 'se')])
    for tag, r in results.items():
        for m in r['methods']:
            nums, row = per_image(r, m), [tag, m, len(r['targets'])]
            for _, key, _ in METRICS:
                row += (['%.6g' % v for v in mean_se(nums[key])]
                        if key in nums else ['', ''])
            w.writerow(row)
    rand = io.StringIO()
    w = csv.writer(rand)
    w.writerow(['model', 'method', 'layers re-initialised',
                'layer re-initialised at this step', 'spearman mean',
                'spearman se', 'images'])
    for tag, r in results.items():
        for m in r['methods'] if 'randomisation' in r else ():
            for k, layer in enumerate(r['layers']):
                mean, se = mean_se(r['randomisation'][m][k])
                w.writerow([tag, m, k + 1, layer, '%.6g' % mean,
                            '%.6g' % se, r['randomisation'][m].shape[1]])

    arrays = {'image_index': chosen, 'labels': labels}
    for tag, r in results.items():
        for key in ('predicted', 'targets', 'correct'):
            arrays['%s__%s' % (tag, key)] = r[key]
        if 'layers' in r:
            arrays['%s__layers' % tag] = np.array(r['layers'])
        for m in r['methods']:
            for key, value in r[m].items():
                arrays['%s__%s__%s' % (tag, m, key)] = value
            if 'randomisation' in r:
                arrays['%s__%s__randomisation' % (tag, m)] = \
                    r['randomisation'][m]

    fig = plot_curves(results, settings)
    contents = [
        (table_csv, table.getvalue().encode('utf-8')),
        (rand_csv, rand.getvalue().encode('utf-8')),
        (npz, atomic.in_memory(lambda f: np.savez_compressed(f, **arrays))),
        (png, atomic.in_memory(lambda f: fig.savefig(f, format='png',
                                                     dpi=100))),
        (pdf, atomic.in_memory(lambda f: fig.savefig(f, format='pdf',
                                                     dpi=100))),
        (md, markdown(results, settings).encode('utf-8'))]
    for path, data in contents:
        atomic.write_bytes(path, data)
    return paths


def markdown(results, settings):
    s = settings
    lines = ['# Faithfulness of the attribution maps', '',
             'Command: `%s`' % s['command'], '',
             '%d test images of %s, a seeded random choice (seed %d), the '
             'same for every model, correctly and incorrectly classified '
             'alike. Target class: the %s. Deletion and insertion: %d '
             'steps, removed pixels filled with the %s baseline. ROAD: 10%%'
             '..90%% of the pixels, noisy linear imputation (noise sd %.2g). '
             'Integrated Gradients: %d steps. Randomisation: %s. Mean ± '
             'standard error over images.'
             % (s['images'], s['data'], s['seed'],
                'predicted class' if s['target'] == 'predicted'
                else 'true label', s['steps'], s['baseline'], ROAD_NOISE,
                s['ig_steps'], 'the first %d of the images, cascading from '
                'the top layer' % s['randomisation_images']
                if s['randomisation_images'] else 'skipped'), '']
    for tag, r in results.items():
        lines.append('- %s: %d of the %d images classified correctly; '
                     '%.0f s' % (tag, r['correct'].sum(), len(r['correct']),
                                 r['total_seconds']))
    lines += ['', '| model | method | ' + ' | '.join(
        '%s (%s better)' % (name, better) for name, _, better in METRICS)
        + ' |', '|---|---|' + '---:|' * len(METRICS)]
    for tag, r in results.items():
        for m in r['methods']:
            nums = per_image(r, m)
            lines.append('| %s | %s | %s |' % (tag, m, ' | '.join(
                _cell(nums[key], 2 if key.startswith('road') else 3)
                if key in nums else '-' for _, key, _ in METRICS)))
    lines += ['', 'ROAD: the fraction of images still given the target '
              'class, averaged over the nine fractions. rand.: Spearman '
              'rank correlation of the maps with the trained model\'s after '
              're-initialising the top layer, and all layers '
              '(randomisation.csv has every layer).', '']
    for tag, r in results.items():
        if 'integrated-gradients' in r['methods']:
            ig = r['integrated-gradients']
            lines.append('%s: Integrated Gradients completeness error '
                         '|sum of map - (score - score(black))|: mean %.3g '
                         '(median %.3g)' % (
                             tag, np.abs(ig['ig_completeness']).mean(),
                             np.median(np.abs(ig['ig_completeness']))))
    lines += ['', 'Seconds spent per image (this run, this machine):', '',
              '| model | method | maps | deletion+insertion | ROAD |',
              '|---|---|---:|---:|---:|']
    for tag, r in results.items():
        n = float(len(r['targets']))
        for m in r['methods']:
            lines.append('| %s | %s | %s |' % (tag, m, ' | '.join(
                '%.4f' % (r['seconds'].get((m, part), 0) / n)
                for part in ('maps', 'deletion+insertion', 'road'))))
        if ('all', 'randomisation') in r['seconds']:
            lines.append('| %s | randomisation (all methods, per image of '
                         'its %d) | | | %.3f |' % (
                             tag, r['randomisation'][r['methods'][0]].shape[1],
                             r['seconds']['all', 'randomisation']
                             / r['randomisation'][r['methods'][0]].shape[1]))
    lines += ['', 'Curves: curves.png / curves.pdf; per-image numbers: '
              'per_image.npz (keys MODEL__METHOD__METRIC).', '']
    return '\n'.join(lines)


def plot_curves(results, settings):
    """The curves as a matplotlib Figure, which write_results saves. A
    Figure of its own, not pyplot's: a caller's backend and open figures
    stay as they were."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    tags = list(results)
    fig = Figure(figsize=(16, 3.6 * len(tags)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(tags), 4, squeeze=False)
    for row, tag in zip(axes, tags):
        r = results[tag]
        for m in r['methods']:
            colour = 'C%d' % attr.METHODS.index(m)
            x = np.linspace(0, 1, r[m]['deletion'].shape[1])
            row[0].plot(x, r[m]['deletion'].mean(axis=0), color=colour,
                        label=m)
            row[1].plot(x, r[m]['insertion'].mean(axis=0), color=colour)
            row[2].plot(ROAD_FRACTIONS, r[m]['road_morf'].mean(axis=0),
                        color=colour)
            row[2].plot(ROAD_FRACTIONS, r[m]['road_lerf'].mean(axis=0),
                        color=colour, linestyle='--')
            if 'randomisation' in r:
                rho = r['randomisation'][m].mean(axis=1)
                row[3].plot(np.arange(len(rho) + 1),
                            np.concatenate([[1.0], rho]), color=colour,
                            marker='.')
        row[0].set_title('deletion (%s fill)' % settings['baseline'])
        row[1].set_title('insertion (from the %s fill)'
                         % settings['baseline'])
        row[2].set_title('ROAD: MoRF solid, LeRF dashed')
        row[3].set_title('cascading randomisation')
        row[0].set_ylabel('%s\ntarget-class probability' % tag)
        row[1].set_ylabel('target-class probability')
        for ax in row[:2]:
            ax.set_xlabel('fraction of pixels removed / inserted')
        row[2].set_xlabel('fraction of pixels imputed')
        row[2].set_ylabel('fraction still given the target')
        row[3].set_xlabel('layers re-initialised (from the top)')
        row[3].set_ylabel('Spearman with trained maps')
        if 'layers' in r:
            row[3].set_xticks(np.arange(len(r['layers']) + 1))
            row[3].set_xticklabels(['trained'] + r['layers'], rotation=90,
                                   fontsize=7)
        row[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def model_tag(path, taken):
    """A short name for a model file: its folder for .../model.npz."""
    stem = os.path.splitext(os.path.basename(path))[0]
    folder = os.path.basename(os.path.dirname(os.path.abspath(path)))
    tag = folder if stem in ('model', 'checkpoint') and folder else stem
    count = sum(1 for t in taken if t == tag or t.startswith(tag + '-'))
    return tag if not count else '%s-%d' % (tag, count + 1)


def run(model_paths, out_dir, data_override=None, methods=None, command='',
        **options):
    """The `faithfulness` command: load the models, check every request
    before any work, evaluate, write. options: evaluate()'s keywords."""
    from . import checkpoint, train
    models, tags = [], []
    for path in model_paths:
        net, meta, _ = checkpoint.load(path)
        tags.append(model_tag(path, tags))
        for m in methods or ():
            attr.check_method(net, m, '%s (a %s model)'
                              % (path, meta['model']))
        models.append((tags[-1], net, meta))
    first = models[0][2]
    for tag, _, meta in models[1:]:
        if (list(meta['classes']) != list(first['classes'])
                or list(meta['input_shape']) != list(first['input_shape'])):
            raise attr.AttributionError(
                '%s and %s do not share classes and input shape; evaluate '
                'them separately' % (tags[0], tag))
    X, y = train.load_test_data(first, data_override)
    progress = Progress()
    try:
        chosen, labels, results = evaluate(models, X, y, methods,
                                           progress=progress, **options)
    finally:
        progress.done()
    settings = dict(DEFAULTS, **options)
    settings.update(command=command, images=len(chosen),
                    data=(data_override or first['config'])['data'],
                    randomisation_images=min(
                        settings['randomisation_images'], len(chosen)))
    return write_results(out_dir, chosen, labels, results, settings)
