"""Issue 10: Table 3 from run folders (several seeds averaged), the training
curves, `reproduce --seeds`, and exporting a run as a model folder."""
import csv
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from gcm_lasagne import (checkpoint, cli, curves, paper, report, runfolder,
                         shipped, train)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.dirname(shipped.model_path())


def make_run(folder, model, accuracy, seed=1, seconds=10.0, **recipe):
    """A finished run folder as train.train leaves it, with made-up
    numbers: config.json, log.csv (accuracy rising to `accuracy`) and
    metrics.json. The recipe is Table 2's unless `recipe` changes it."""
    config = train.default_config(model=model, seed=seed,
                                  data='/somewhere/cifar10-jpeg', **recipe)
    epochs = config['epochs']
    os.makedirs(folder)
    with open(os.path.join(folder, 'config.json'), 'w') as f:
        json.dump(config, f)
    rows = [{'epoch': e, 'learning_rate': train.learning_rate(config, e),
             'train_loss': 2.0 / e, 'train_acc': 0.5,
             'eval_loss': 1.0, 'eval_acc': accuracy * e / epochs,
             'seconds': seconds + e} for e in range(1, epochs + 1)]
    runfolder.write_log(os.path.join(folder, 'log.csv'), rows, 'w')
    with open(os.path.join(folder, 'metrics.json'), 'w') as f:
        json.dump({'accuracy': accuracy, 'epochs': epochs}, f)


def read_csv(path):
    with open(path) as f:
        return {r['name']: r for r in csv.DictReader(f)}


def test_table3_one_run_per_model_and_the_curves(tmp_path):
    runs, results = str(tmp_path / 'runs'), str(tmp_path / 'results')
    make_run(os.path.join(runs, 'cnn'), 'cnn', 0.9039, seconds=40.4)
    make_run(os.path.join(runs, 'gcm'), 'gcm', 0.9043, seconds=50)
    make_run(os.path.join(runs, 'gcm-clip'), 'gcm-clip', 0.8991)
    os.makedirs(os.path.join(runs, 'unfinished'))  # no metrics: not a row
    assert cli.main(['--runs', runs, '--results', results, 'table3',
                     '--no-timing']) == 0
    rows = read_csv(os.path.join(results, 'table3.csv'))
    assert rows['gcm']['accuracy'] == '90.43' and rows['gcm']['runs'] == '1'
    assert rows['gcm']['accuracy_std'] == ''  # one run: no spread
    assert rows['cnn']['seconds_per_epoch'] == '131'  # median of 41.4..220.4
    assert rows['gcm-clip']['data'] == 'cifar10-jpeg'
    assert rows['gcm']['params'] == str(paper.PARAMS['gcm'])
    assert rows['gcm']['kind'] == 'paper' and rows['gcm']['recipe'] == ''
    md = open(os.path.join(results, 'table3.md')).read()
    assert ('| gcm | 162K | 162K | - | 1.15 | 90.43 (n=1) | 180 | 140 | '
            'cifar10-jpeg | 90.43 | +0.00 |') in md
    assert ('GCM - CNN: +0.04 points (n = 1 and 1); a standard error needs '
            'at least two runs') in md
    assert 'controls' not in md  # no such runs: no second table
    png = os.path.join(results, 'curves.png')
    with Image.open(png) as im:
        assert im.format == 'PNG'
        assert im.size == tuple(d * curves.DPI for d in curves.SIZE_INCHES)
        # not blank: the lines of three models in three colours
        assert len(im.convert('RGB').getcolors(1 << 20)) > 50


def test_table3_averages_the_seeds_of_a_model(tmp_path):
    runs, results = str(tmp_path / 'runs'), str(tmp_path / 'results')
    # seeds trained on machines of different speeds
    for seed, acc, seconds in ((1, 0.90, 10.2), (2, 0.91, 90.2),
                               (3, 0.92, 50.2)):
        make_run(os.path.join(runs, cli.run_name('gcm', seed)), 'gcm', acc,
                 seed=seed, seconds=seconds)
    make_run(os.path.join(runs, 'cnn'), 'cnn', 0.85)
    rows = {r['model']: r for r in report.table3(runs, timing=False)}
    gcm = rows['gcm']
    assert (gcm['accuracy'], gcm['accuracy_std'], gcm['runs']) == \
        (91.0, 1.0, 3)
    assert gcm['seeds'] == '1 2 3'
    # each run's median (of seconds+1..seconds+180), not one pooled figure
    assert gcm['seconds_per_epoch'] == '101 181 141'
    assert rows['cnn']['runs'] == 1 and rows['gcm-clip']['runs'] == 0
    text = report.write_table3(list(rows.values()), results)
    assert '| 91.00 ± 1.00 (n=3) | 180 | 101 181 141 |' in text


def test_table3_keeps_other_recipes_and_controls_apart(tmp_path):
    """Runs of another recipe are never averaged with Table 2's: each
    recipe is a row of its own below Table 3, named by what it changes, and
    a control sits there with its published figure."""
    runs, results = str(tmp_path / 'runs'), str(tmp_path / 'r')
    make_run(os.path.join(runs, 'gcm'), 'gcm', 0.90)
    make_run(os.path.join(runs, 'gcm-short'), 'gcm', 0.70, train_subset=30,
             epochs=4, lr_steps=[2, 3])
    make_run(os.path.join(runs, 'gcm-wd'), 'gcm', 0.88, weight_decay=1e-4)
    make_run(os.path.join(runs, 'gcm-wd-seed2'), 'gcm', 0.86, seed=2,
             weight_decay=1e-4)
    make_run(os.path.join(runs, 'resnet'), 'resnet20', 0.87,
             recipe='he2016')
    assert cli.main(['--runs', runs, '--results', results, 'table3',
                     '--no-timing']) == 0
    rows = read_csv(os.path.join(results, 'table3.csv'))
    assert list(rows) == ['cnn', 'gcm', 'gcm-clip',
                          'gcm (epochs 4, lr steps 2 3, train subset 30)',
                          'gcm (weight decay 0.0001)', 'resnet20 (he2016)']
    assert (rows['gcm']['accuracy'], rows['gcm']['runs']) == ('90.0', '1')
    wd = rows['gcm (weight decay 0.0001)']
    assert (wd['kind'], wd['accuracy'], wd['accuracy_std'], wd['runs'],
            wd['paper_accuracy'], wd['difference']) == \
        ('variant', '87.0', '1.41', '2', '90.43', '-3.43')
    control = rows['resnet20 (he2016)']
    assert (control['kind'], control['params'], control['paper_accuracy'],
            control['difference'], control['epochs']) == \
        ('control', '269722', '91.25', '-4.25', '164')
    assert 'He et al. 2016' in control['source']
    md = open(os.path.join(results, 'table3.md')).read()
    table3, others = md.split('controls (not in the paper)')
    assert 'resnet20' not in table3 and 'weight decay' not in table3
    assert ('| resnet20 (he2016) | control | 270K | 0.27M | 87.00 (n=1) | 164 | '
            '92 | cifar10-jpeg | 91.25 | -4.25 | He et al. 2016, Table 6 |'
            in others)
    assert '| gcm (weight decay 0.0001) | variant | 162K | 162K | ' \
        '87.00 ± 1.41 (n=2) |' in others
    # the control's -4.25 subtracted from each difference from the paper
    # (gcm 90.00 - 90.43 = -0.43, the variant 87.00 - 90.43 = -3.43)
    assert ('Less what the data costs, as resnet20 (he2016) estimates it '
            '(-4.25 points from its published figure, n = 1): gcm +3.82, '
            'gcm (epochs 4, lr steps 2 3, train subset 30) -16.18, '
            'gcm (weight decay 0.0001) +0.82 points from the paper.') in others
    # the short form for the README: only rows with runs, the same lines
    summary = open(os.path.join(results, 'summary.md')).read()
    assert '| cnn |' not in summary and '| gcm | paper | 162K |' in summary
    assert ('| resnet20 (he2016) | control | 270K | 87.00 (n=1) | 91.25 | '
            '-4.25 | He et al. 2016, Table 6 | 92 |') in summary
    assert summary.rstrip().endswith('+0.82 points from the paper.')
    assert os.path.exists(os.path.join(results, 'curves.png'))


def test_table3_reads_several_folders_of_runs(tmp_path):
    """`table3 models runs-finished`: the runs that ship with weights and
    those that ship as evidence only, in one table; seeds of one model
    from both folders are averaged."""
    models, finished = str(tmp_path / 'models'), str(tmp_path / 'finished')
    results = str(tmp_path / 'results')
    make_run(os.path.join(models, 'gcm-cifar10jpeg'), 'gcm', 0.90)
    make_run(os.path.join(finished, 'gcm-seed2'), 'gcm', 0.92, seed=2)
    make_run(os.path.join(finished, 'resnet20'), 'resnet20', 0.87,
             recipe='he2016')
    assert cli.main(['--results', results, 'table3', models, finished,
                     '--no-timing']) == 0
    rows = read_csv(os.path.join(results, 'table3.csv'))
    assert (rows['gcm']['accuracy'], rows['gcm']['seeds']) == ('91.0', '1 2')
    assert rows['resnet20 (he2016)']['accuracy'] == '87.0'
    # one folder named twice (here through another path) is read once
    assert report.find_runs([models, models + '/.']) == \
        {('gcm', ''): [os.path.realpath(os.path.join(models,
                                                      'gcm-cifar10jpeg'))]}
    # a folder that is not there is a mistake, not an empty table
    assert cli.main(['--results', results, 'table3', models,
                     str(tmp_path / 'nothing'), '--no-timing']) == 1


def test_welch_on_samples_whose_answer_is_known():
    # b has no spread, so the degrees of freedom are len(a) - 1 = 2, where
    # Student's t has a closed form: two-sided p = 1 - t / sqrt(2 + t^2)
    test = report.welch([90, 91, 92], [89, 89, 89])
    assert test['difference'] == pytest.approx(2)
    assert test['se'] == pytest.approx(np.sqrt(1 / 3.))
    assert test['df'] == pytest.approx(2)
    t = 2 / np.sqrt(1 / 3.)
    assert test['t'] == pytest.approx(t)
    assert test['p'] == pytest.approx(1 - t / np.sqrt(2 + t * t))  # 0.074
    # the same closed form solved for p = 0.05: t(0.975, df=2) = sqrt(18.513)
    half = np.sqrt(2 * 0.95 ** 2 / (1 - 0.95 ** 2)) * np.sqrt(1 / 3.)
    assert (test['low'], test['high']) == pytest.approx((2 - half, 2 + half))
    assert test['low'] < 0  # p > 0.05: the interval holds zero
    far = report.welch([90, 91, 92], [80, 80, 80])
    assert far['p'] == pytest.approx(1 - 11 * np.sqrt(3) / np.sqrt(
        2 + 363), rel=1e-6)  # 0.0027
    # equal n and variances: df = 2 (n - 1)
    assert report.welch([1, 2, 3], [2, 3, 4])['df'] == pytest.approx(4)
    assert report.welch([90], [89, 90]) is None
    assert report.welch([90, 90], [89, 89]) is None  # no spread at all


def test_table3_says_whether_gcm_minus_cnn_is_distinguishable(tmp_path):
    """Three seeds of each: the line the paper's claim needs, for a
    difference inside the spread and for one far outside it."""
    for case, cnn in (('near', (0.89, 0.90, 0.90)),
                      ('far', (0.80, 0.80, 0.80))):
        runs = str(tmp_path / case)
        for seed, (g, c) in enumerate(zip((0.90, 0.91, 0.92), cnn), 1):
            make_run(os.path.join(runs, cli.run_name('gcm', seed)), 'gcm', g,
                     seed=seed)
            make_run(os.path.join(runs, cli.run_name('cnn', seed)), 'cnn', c,
                     seed=seed)
        rows = report.table3(runs, timing=False)
        text = report.write_table3(rows, str(tmp_path / ('r' + case)))
        claim = [l for l in text.splitlines() if l.startswith('GCM - CNN')]
        assert len(claim) == 1
        test = report.welch([90, 91, 92], [100 * c for c in cnn])
        assert ('%+.2f ± %.2f points (standard error; 95%% interval %+.2f to '
                '%+.2f)' % (test['difference'], test['se'], test['low'],
                            test['high']) in claim[0])
        assert claim[0].endswith('from zero at n = 3 and 3 (5% level).')
        assert ('not distinguishable' in claim[0]) == (case == 'near')
        assert (test['low'] > 0) == (case == 'far')  # the interval agrees
    assert '91.00 ± 1.00 (n=3)' in text and '80.00 ± 0.00 (n=3)' in text


def test_table3_says_gcm_minus_cnn_under_each_recipe_both_ran(tmp_path):
    """Issue 23: does the paper's parity survive a weight penalty? A line
    for each recipe both models have finished runs of, none for a recipe
    only GCM ran."""
    runs = str(tmp_path / 'runs')
    make_run(os.path.join(runs, 'gcm'), 'gcm', 0.85)
    make_run(os.path.join(runs, 'cnn'), 'cnn', 0.84)
    make_run(os.path.join(runs, 'gcm-wd'), 'gcm', 0.87, weight_decay=1e-4)
    make_run(os.path.join(runs, 'cnn-wd'), 'cnn', 0.875, weight_decay=1e-4)
    make_run(os.path.join(runs, 'gcm-pad2'), 'gcm', 0.86, pad=2)
    text = report.summary(report.table3(runs, timing=False))
    claim = [l for l in text.splitlines() if l.startswith('GCM - CNN')]
    assert claim == [
        'GCM - CNN: +1.00 points (n = 1 and 1); a standard error needs at '
        'least two runs (seeds) of each, with some spread.',
        'GCM - CNN (weight decay 0.0001): -0.50 points (n = 1 and 1); a '
        'standard error needs at least two runs (seeds) of each, with some '
        'spread.']


def test_recipe_label_names_what_differs_from_the_named_recipe():
    label = report.recipe_label
    assert label(train.default_config()) == ''
    older = train.default_config()  # older configs have no recipe name
    del older['recipe']
    assert label(older) == ''
    assert label(train.default_config(recipe='he2016')) == 'he2016'
    assert label(train.default_config(recipe='he2016', pad=2, flip=False)) \
        == 'he2016, pad 2, flip False'
    assert label(train.default_config(weight_decay=5e-5, lr_steps=[])) == \
        'lr steps none, weight decay 5e-05'


def test_reproduce_trains_every_model_for_every_seed_once(tmp_path,
                                                          monkeypatch):
    """The orchestration only: training, timing and figures are replaced by
    stand-ins that record what they were asked to do."""
    runs = str(tmp_path / 'runs')
    make_run(os.path.join(runs, 'cnn'), 'cnn', 0.9)  # done already
    trained = []

    def fake_train(config, out, resume):
        # reproduce continues what exists and starts what does not
        assert resume == os.path.exists(os.path.join(out, 'checkpoint.npz'))
        trained.append((config['model'], config['seed'], config['epochs'],
                        os.path.basename(out)))
        make_run(out, config['model'], 0.8 + config['seed'] / 100.,
                 seed=config['seed'])

    monkeypatch.setattr(train, 'train', fake_train)
    monkeypatch.setattr(report, 'seconds_per_batch',
                        lambda models: {m: 1.0 for m in models})
    drawn = []
    monkeypatch.setattr(cli.visualize, 'run_figures',
                        lambda model, out, data: drawn.append(data) or [])
    results = str(tmp_path / 'results')
    assert cli.main(['--runs', runs, '--results', results, 'reproduce',
                     '--seeds', '2', '--data', '/somewhere/cifar10-jpeg']) == 0
    assert trained == [('gcm', 1, 180, 'gcm'), ('gcm-clip', 1, 180, 'gcm-clip'),
                       ('gcm', 2, 180, 'gcm-seed2'), ('cnn', 2, 180, 'cnn-seed2'),
                       ('gcm-clip', 2, 180, 'gcm-clip-seed2')]
    rows = read_csv(os.path.join(results, 'table3.csv'))
    assert rows['gcm']['runs'] == '2' and rows['gcm']['seeds'] == '1 2'
    assert rows['gcm']['time_ratio'] == '1.0'
    assert os.path.exists(os.path.join(results, 'curves.png'))
    # figures read the data training read, not the folder a run's config
    # names (a shipped run's config names its data set only)
    assert [d['data'] for d in drawn] == ['/somewhere/cifar10-jpeg'] * 2


@pytest.mark.parametrize('options, says', [
    (['--weight-decay', '1e-4'], '--weight-decay 0.0001: the run in '),
    (['--epochs', '5'], 'has done 180 epochs already'),
    (['--epochs', '200'], 'ended after 180 epochs and has no checkpoint'),
], ids=['another recipe', 'shorter', 'longer'])
def test_reproduce_refuses_a_finished_run_of_other_options(
        tmp_path, monkeypatch, capsys, options, says):
    """A finished run is 'done already' only if it is the run asked for
    (its config.json checked as a resume checks a checkpoint); nothing is
    trained or written when it is not."""
    runs = str(tmp_path / 'runs')
    make_run(os.path.join(runs, 'gcm'), 'gcm', 0.9)
    monkeypatch.setattr(train, 'train', lambda *a, **k: pytest.fail(
        'trained'))
    assert cli.main(['--runs', runs, '--results', str(tmp_path / 'r'),
                     'reproduce', '--data', '/somewhere/cifar10-jpeg']
                    + options) == 1
    err = capsys.readouterr().err
    assert err.startswith('error: ') and err.count('\n') == 1
    assert says in err
    assert sorted(os.listdir(runs)) == ['gcm']


def test_export_names_the_data_set_and_keeps_the_weights(tmp_path):
    run = str(tmp_path / 'run')
    shutil.copytree(SHIPPED, run)
    meta = json.load(open(os.path.join(run, 'config.json')))
    meta['data'] = '/a/folder/of/some/machine/cifar10-jpeg'
    with open(os.path.join(run, 'config.json'), 'w') as f:
        json.dump(meta, f)
    out = str(tmp_path / 'shared')
    assert cli.main(['export', run, out]) == 0
    config = json.load(open(os.path.join(out, 'config.json')))
    assert config['data'] == 'cifar10-jpeg'
    new_meta, new_values, _ = checkpoint.read(os.path.join(out, 'model.npz'))
    old_meta, old_values, _ = checkpoint.read(os.path.join(run, 'model.npz'))
    assert new_meta['config'] == config
    assert new_meta['config']['seed'] == old_meta['config']['seed']
    assert all(np.array_equal(a, b) for a, b in zip(new_values, old_values))
    assert len(new_values) == len(old_values)
    for name in ('log.csv', 'metrics.json'):
        assert open(os.path.join(out, name)).read() == \
            open(os.path.join(run, name)).read()
    # a second export into the same folder would overwrite a model: refused
    assert cli.main(['export', run, out, '--data-name', 'x']) == 1
    assert cli.main(['export', str(tmp_path), str(tmp_path / 'o')]) == 1


def test_export_without_weights_keeps_the_evidence(tmp_path):
    run, out = str(tmp_path / 'run'), str(tmp_path / 'evidence')
    make_run(run, 'resnet20', 0.87, recipe='he2016')  # no model.npz
    assert cli.main(['export', run, out]) == 1  # a model needs its weights
    assert not os.path.exists(out)
    assert cli.main(['export', run, out, '--no-weights']) == 0
    assert sorted(os.listdir(out)) == ['config.json', 'log.csv',
                                       'metrics.json']
    config = json.load(open(os.path.join(out, 'config.json')))
    assert config == dict(json.load(open(os.path.join(run, 'config.json'))),
                          data='cifar10-jpeg')
    assert report.find_runs(out) == {}  # the folder is a run, not runs
    assert report.find_runs(str(tmp_path))[('resnet20', 'he2016')] == \
        [out, run]
    # a broken run is not evidence: one line, nothing written
    os.remove(os.path.join(run, 'log.csv'))
    assert cli.main(['export', run, str(tmp_path / 'o'), '--no-weights']) == 1
    assert not os.path.exists(str(tmp_path / 'o'))
