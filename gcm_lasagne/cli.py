"""gcm-lasagne: reproduce Generative Contribution Mappings (Arai & Nagao).

With no command (or `reproduce`): train GCM, the CNN baseline and clipped
GCM on CIFAR-10 with the paper's recipe (Table 2), resuming whatever is
partly done, then write Table 3 under results/.
"""
import argparse
import os
import sys

from . import (api, attribution, checkpoint, curves, device, export,
               faithfulness, faithfulness_run, jobs, options, paper, report,
               shipped, stopping, train, visualize)
from .errors import DataError, InputError
from .images import read_images
from .models import MODELS

# every numeric option's type, with its range (options.py)
LIMIT = options.OPTIONS

# GCM and the CNN first: the paper's comparison (and the faithfulness
# comparison) needs those two, the clipped variant only adds a row.
PAPER_MODELS = ('gcm', 'cnn', 'gcm-clip')


class Parser(argparse.ArgumentParser):
    def error(self, message):
        # one line, not argparse's usage block
        sys.stderr.write('%s: error: %s (see --help)\n' % (self.prog, message))
        sys.exit(2)


def add_recipe_options(p, seed=True):
    """The recipe: --recipe names one (train.RECIPES), and each option
    given beside it overrides that recipe's value."""
    t2, he = paper.TABLE2, train.RECIPES['he2016']

    def defaults(key):
        return 'table2: %s, he2016: %s' % (t2[key], he[key])
    g = p.add_argument_group('recipe (default: Table 2 of the paper)')
    g.add_argument('--recipe', choices=tuple(train.RECIPES),
                   help="the paper's Table 2, or He et al. 2016's CIFAR-10 "
                        "recipe (for the resnet20 control); options below "
                        "override its values (default: table2)")
    g.add_argument('--epochs', type=LIMIT['epochs'], help=defaults('epochs'))
    g.add_argument('--batch-size', type=LIMIT['batch_size'],
                   help=defaults('batch_size'))
    g.add_argument('--learning-rate', type=LIMIT['learning_rate'],
                   help=defaults('learning_rate'))
    g.add_argument('--lr-steps', type=LIMIT['lr_steps'], nargs='*',
                   metavar='EPOCH',
                   help='multiply the rate by --lr-factor after these '
                        'epochs; none after --epochs (%s)'
                        % defaults('lr_steps'))
    g.add_argument('--lr-factor', type=LIMIT['lr_factor'],
                   help=defaults('lr_factor'))
    g.add_argument('--momentum', type=LIMIT['momentum'],
                   help=defaults('momentum'))
    g.add_argument('--weight-decay', type=LIMIT['weight_decay'],
                   help='coefficient c of the L2 penalty c * sum(w^2) on '
                        "the weights and batch norm's gamma; its gradient "
                        'is 2 c w, so a decay d added to the gradient is '
                        'c = d / 2 (%s)' % defaults('weight_decay'))
    g.add_argument('--pad', type=LIMIT['pad'],
                   help='zero padding before the random crop, pixels (%s)'
                        % defaults('pad'))
    g.add_argument('--no-flip', dest='flip', action='store_false',
                   default=None, help='no random horizontal flips')
    g.add_argument('--validation', type=LIMIT['validation'], metavar='N',
                   help='hold out N training images and report accuracy on '
                        'them each epoch (the paper chose its recipe with '
                        '5000); default: evaluate on the test set')
    g.add_argument('--train-subset', type=LIMIT['train_subset'], metavar='N',
                   help='train on a fixed random N of the training images')
    if seed:
        g.add_argument('--seed', type=LIMIT['seed'], help='default: 1')


def add_data_options(p, default='cifar10'):
    p.add_argument('--data', default=default,
                   help="'cifar10' (the official archive, downloaded into "
                        "--data-dir) or PATH, a folder with train/<class>/ "
                        "and test/<class>/ images, or such a folder as a "
                        ".tar.gz, .tgz or .tar (unpacked into --data-dir "
                        "once)")
    p.add_argument('--data-dir', default='data',
                   help='where the CIFAR-10 archive is and archives given '
                        'to --data are unpacked (default: data/)')
    p.add_argument('--no-download', dest='download', action='store_false',
                   help='never download CIFAR-10; fail if it is missing')
    p.add_argument('--image-size', type=LIMIT['image_size'], nargs=2,
                   metavar=('ROWS', 'COLS'),
                   help='resize image-folder images to this size')


def build_parser(prog=None):
    # prog: as invoked (run_cifar10.py, or the installed gcm-lasagne)
    p = Parser(prog=prog, description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--runs', default='runs',
                   help='folder of run folders (default: runs/)')
    p.add_argument('--results', default='results',
                   help='where Table 3, the faithfulness results and the '
                        'demo figures go (default: results/)')
    # the bare command is `reproduce` with its defaults
    p.set_defaults(command='reproduce', data='cifar10', data_dir='data',
                   download=True, image_size=None, seeds=1)
    sub = p.add_subparsers(dest='command', parser_class=Parser)

    r = sub.add_parser('reproduce', help='the default: GCM, the CNN and clipped '
                       'GCM with Table 2\'s recipe, then Table 3')
    add_data_options(r)
    r.add_argument('--seeds', type=LIMIT['seeds'], default=1, metavar='N',
                   help='train each model with seeds 1..N (RUNS/MODEL for '
                        'seed 1, RUNS/MODEL-seedK for the others)')
    add_recipe_options(r, seed=False)

    t = sub.add_parser('train', help='train one model')
    t.add_argument('--model', choices=MODELS, help='default: gcm')
    t.add_argument('--out', help='run folder (default: RUNS/MODEL)')
    t.add_argument('--resume', action='store_true',
                   help='continue the run in --out where it stopped, with '
                        'its recipe; --epochs may lengthen it, --data name '
                        'where its data is now')
    t.add_argument('--overwrite', action='store_true',
                   help='replace the run already in --out (its model, '
                        'checkpoint, log, config and metrics)')
    t.add_argument('--auto-resume', action='store_true',
                   help='for job scripts: continue the run in --out if it '
                        'has a checkpoint, start it if the folder holds no '
                        'run, exit 0 saying "done already" if it holds the '
                        'finished run (SIGTERM stops any run after its '
                        'current step, keeping its last finished epoch; '
                        'exit status %d)' % stopping.EXIT_STATUS)
    add_data_options(t, default=None)
    add_recipe_options(t)

    e = sub.add_parser('evaluate', help='accuracy, per-class accuracy and '
                       'confusion matrix of a saved model on its test set')
    e.add_argument('checkpoint')
    add_data_options(e, default=None)

    map_help = ("the maps drawn: 'ccm' for GCM, 'cam' (default) or "
                "'grad-cam' for the CNN baseline and resnet20")
    f = sub.add_parser('figures', help='Figures 6 (7 for a clipped model) '
                       'and 8 from correctly classified test images; CAM '
                       'or Grad-CAM for the CNN')
    f.add_argument('checkpoint')
    f.add_argument('--out', help='default: the model\'s folder')
    f.add_argument('--method', choices=api.FIGURE_METHODS, help=map_help)
    add_data_options(f, default=None)

    x = sub.add_parser('explain', help='top classes and CCM (CNN: CAM) '
                       'figures for any image files')
    x.add_argument('checkpoint')
    x.add_argument('images', nargs='+', metavar='IMAGE')
    x.add_argument('--out', default='explained',
                   help='where the figures and maps go, STEM_METHOD.png '
                        'and STEM_METHOD.npz per image (STEM: the file '
                        "name's, METHOD: --method's), so the files of one "
                        'method never replace those of another (default: '
                        'explained/)')
    x.add_argument('--top', type=LIMIT['top'], default=3)
    x.add_argument('--method', choices=api.FIGURE_METHODS, help=map_help)

    c = sub.add_parser('compare', help="GCM's CCM beside a CNN's CAM of the "
                       'same images, with both predictions')
    c.add_argument('gcm', metavar='GCM.npz')
    c.add_argument('other', metavar='CNN.npz',
                   help='a model with CAM: the CNN baseline or resnet20')
    c.add_argument('images', nargs='*', metavar='IMAGE',
                   help='image files; none: test images of --data (or of '
                        "the GCM's data)")
    c.add_argument('--method', choices=attribution.CNN_METHODS,
                   default='cam', help='the second model\'s map '
                   '(%(default)s)')
    c.add_argument('--count', type=LIMIT['count'], metavar='N',
                   help='test images, a seeded choice balanced over the '
                        'classes (default: one a class, at most 10)')
    c.add_argument('--seed', type=LIMIT['seed'], default=0,
                   help='of the test image choice (%(default)s)')
    c.add_argument('--out', help='default: RESULTS/compare')
    add_data_options(c, default=None)

    d = sub.add_parser('demo', help='Figures 6 and 8 from the model that '
                       'ships with this repository, offline')
    d.add_argument('--out', help='default: RESULTS/demo')

    ex = sub.add_parser('export', help='a finished run as a model folder to '
                        'share, the data set named instead of a local folder')
    ex.add_argument('run')
    ex.add_argument('out')
    ex.add_argument('--data-name', help='default: the data folder\'s name')
    ex.add_argument('--no-weights', action='store_true',
                    help='only the evidence: config.json, log.csv and '
                         'metrics.json')

    fa = sub.add_parser('faithfulness', help='deletion, insertion, ROAD and '
                        'the randomisation check of the attribution maps')
    fa.add_argument('checkpoints', nargs='+', metavar='MODEL.npz')
    fa.set_defaults(**faithfulness_run.DEFAULTS)
    fa.add_argument('--images', type=LIMIT['images'],
                    help='test images, the same for every model '
                         '(%(default)s)')
    fa.add_argument('--methods', nargs='+', metavar='METHOD',
                    help='default: all that apply to each model, of: %s'
                         % ' '.join(attribution.METHODS))
    fa.add_argument('--target', choices=('predicted', 'true'),
                    help='the class explained (%(default)s)')
    fa.add_argument('--baseline', choices=faithfulness.BASELINES,
                    help='fill of deleted pixels (%(default)s)')
    fa.add_argument('--steps', type=LIMIT['steps'],
                    help='deletion/insertion steps (%(default)s)')
    fa.add_argument('--ig-steps', type=LIMIT['ig_steps'],
                    help='Integrated Gradients steps (%(default)s)')
    fa.add_argument('--randomisation-images',
                    type=LIMIT['randomisation_images'], metavar='N',
                    help='images for the randomisation check '
                         '(%(default)s; 0: skip it)')
    fa.add_argument('--seed', type=LIMIT['seed'],
                    help='of the image choice, the '
                    'random map, ties and ROAD noise (%(default)s)')
    fa.add_argument('--out', help='default: RESULTS/faithfulness')
    add_data_options(fa, default=None)

    j = sub.add_parser('jobs', help='the train commands `reproduce` would '
                       'run, one a line, for a job array '
                       '(examples/slurm/table3.sbatch)')
    add_data_options(j)
    j.add_argument('--seeds', type=LIMIT['seeds'], default=1, metavar='N',
                   help='seeds 1..N of each model, as for reproduce')
    add_recipe_options(j, seed=False)

    tb = sub.add_parser('table3', help='Table 3 from the runs that exist')
    tb.add_argument('folders', nargs='*', metavar='RUNS',
                    help='folders of run folders to tabulate together '
                         '(default: --runs; `table3 models runs-finished` '
                         'reads the runs that ship)')
    tb.add_argument('--params-only', action='store_true',
                    help='only the parameter counts; exit 1 if one no '
                         'longer rounds to the paper\'s figure')
    tb.add_argument('--no-timing', action='store_true',
                    help='skip measuring the GCM/CNN time ratio')
    return p


def recipe(args, **overrides):
    """The training config from the command line: every key of
    train.default_config() is an option of the same name; a recipe option
    left out (None) takes the named recipe's value."""
    keys = train.default_config()
    given = {k: v for k, v in vars(args).items()
             if k in keys and v is not None}
    return train.default_config(**dict(given, **overrides))


def cmd_train(args):
    modes = [m for m in ('resume', 'overwrite', 'auto_resume')
             if getattr(args, m)]
    if len(modes) > 1:
        raise train.TrainingError(
            '%s: give one of them (--resume continues the run in --out, '
            '--overwrite replaces it, --auto-resume decides from what it '
            'holds)' % ' and '.join('--' + m.replace('_', '-') for m in modes))
    out = args.out or os.path.join(args.runs, args.model or 'gcm')
    given = given_options(args)
    resume = args.resume
    if args.auto_resume:
        mode = jobs.auto_mode(out, given)
        if mode == 'done':
            print('%s: done already (%s)' % (args.model or 'the run', out))
            return 0
        resume = mode == 'resume'
    # a resume is given what was given again, checked against the run
    config = given if resume else recipe(args)
    metrics = train.train(config, out, resume=resume,
                          overwrite=args.overwrite)
    print('%s: %s accuracy %.2f%% (run folder %s)' % (
        config['model'] or 'the run', metrics['eval_set'],
        100 * metrics['accuracy'], out))


def given_options(args, **fixed):
    """The recipe and data options of the command line (None where left
    out), with `fixed` ones set: what a resume checks against its run."""
    keys = train.default_config()
    return dict({k: v for k, v in vars(args).items() if k in keys}, **fixed)


def data_override(args):
    """The data options given on the command line, if any."""
    if not args.data:
        return None
    return dict(data=args.data, data_dir=args.data_dir,
                download=args.download, image_size=args.image_size)


def cmd_evaluate(args):
    model = api.load_model(args.checkpoint)
    X, y = train.load_test_data(model.meta, data_override(args))
    loss, p = model.evaluate(X, y)
    print(report.metrics_text(
        train.classification_metrics(y, p.label, model.classes), loss))


def cmd_figures(args):
    out = args.out or os.path.dirname(os.path.abspath(args.checkpoint))
    for path in visualize.run_figures(args.checkpoint, out,
                                      data_override(args),
                                      method=args.method):
        print('wrote', path)


def cmd_explain(args):
    visualize.run_explain(args.checkpoint, args.images, args.out, args.top,
                          method=args.method)


def cmd_compare(args):
    from . import compare
    if args.images and (args.data or args.count):
        raise InputError('give image files or test images (--data, '
                         '--count), not both')
    compare.run_compare(args.gcm, args.other,
                        args.out or os.path.join(args.results, 'compare'),
                        args.images, data_override(args), args.count,
                        args.method, args.seed)


def cmd_demo(args):
    """The shipped model on the shipped sample test images (3 a class)."""
    model = api.load_model(shipped.model_path())
    paths = shipped.sample_paths()
    labels = [model.classes.index(os.path.basename(os.path.dirname(p)))
              for p in paths]
    images = read_images(paths, model.input_shape)
    for path in visualize.run_figures(model, args.out, images=images,
                                      labels=labels):
        print('wrote', path)


def cmd_faithfulness(args):
    paths = faithfulness_run.run(
        args.checkpoints, args.out, data_override(args), args.methods,
        command='run_cifar10.py ' + ' '.join(sys.argv[1:]),
        **{k: getattr(args, k) for k in faithfulness_run.DEFAULTS})
    for path in paths:
        print('wrote', path)


def cmd_table3(args):
    if args.params_only:
        text, ok = report.params_table()
        print(text)
        return 0 if ok else 1
    for folder in args.folders:
        if not os.path.isdir(folder):
            raise InputError('%s is not a folder of run folders' % folder)
    write_table3(args.folders or args.runs, args.results,
                 timing=not args.no_timing)
    return 0


def write_table3(runs, results, timing):
    """Table 3 and the training curves of the finished runs."""
    groups = report.find_runs(runs)  # warns once of a run it skips
    print(report.write_table3(report.table3(runs, timing, groups), results))
    if groups:
        print('wrote', curves.plot_curves(groups,
                                          os.path.join(results, 'curves.png')))


def run_name(model, seed):
    return model if seed == 1 else '%s-seed%d' % (model, seed)


def cmd_jobs(args):
    """`reproduce`'s runs as one train command a line; each resumes or
    skips its run when started again."""
    train.check_config(recipe(args))  # one line now, not in every task
    for line in jobs.lines(args, jobs.subcommand(build_parser(), 'train'),
                           PAPER_MODELS, run_name):
        print(line)


def cmd_export(args):
    for path in export.export_run(args.run, args.out, args.data_name,
                                  weights=not args.no_weights):
        print('wrote', path)


def cmd_reproduce(args):
    """The paper's three experiments in turn, each resumed if partly done."""
    for seed in range(1, args.seeds + 1):
        for model in PAPER_MODELS:
            out = os.path.join(args.runs, run_name(model, seed))
            if jobs.finished(out, given_options(args, model=model,
                                                seed=seed)):
                print('%s: done already (%s)' % (model, out))
                continue
            print('== %s, seed %d -> %s' % (model, seed, out))
            train.train(recipe(args, model=model, seed=seed), out,
                        resume=os.path.exists(os.path.join(
                            out, 'checkpoint.npz')))
    write_table3(args.runs, args.results, timing=True)
    # the data the runs were trained on: a run copied from models/ names
    # its data set, not the folder it is in on this machine
    for model in ('gcm', 'gcm-clip'):
        for path in visualize.run_figures(
                os.path.join(args.runs, model, 'model.npz'),
                os.path.join(args.results, model), data_override(args)):
            print('wrote', path)


def default_outs(args):
    """`demo` and `faithfulness` write below --results unless given --out."""
    if args.command in ('demo', 'faithfulness') and not args.out:
        args.out = os.path.join(args.results, args.command)
    return args


def check_folders(args):
    """Folders to write into must not be files: one line now, not a
    traceback after the work."""
    writes_results = args.command in (None, 'reproduce', 'table3')
    for key in ('out', 'results') if writes_results else ('out',):
        path = getattr(args, key, None)
        if path and os.path.exists(path) and not os.path.isdir(path):
            raise train.TrainingError('%s is a file, not a folder to write '
                                      'into' % path)


def printable_anywhere():
    """Class and file names the terminal cannot encode (or that are not
    text at all: undecodable bytes of a file name) are printed escaped,
    never as a UnicodeEncodeError after the work is done."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, 'reconfigure'):
            stream.reconfigure(errors='backslashreplace')


def main(argv=None):
    printable_anywhere()
    args = default_outs(build_parser().parse_args(argv))
    ok, message = device.device_status()
    if not ok:  # Theano would silently run on the CPU
        sys.stderr.write(message + '\n')
        return 1
    commands = {'train': cmd_train, 'evaluate': cmd_evaluate,
                'table3': cmd_table3, 'reproduce': cmd_reproduce,
                'figures': cmd_figures, 'explain': cmd_explain,
                'compare': cmd_compare, 'jobs': cmd_jobs,
                'demo': cmd_demo, 'export': cmd_export,
                'faithfulness': cmd_faithfulness}
    try:
        check_folders(args)
        return commands[args.command or 'reproduce'](args) or 0
    except stopping.Stopped as e:  # not an error: the run waits for a resume
        sys.stderr.write('%s\n' % e)
        return stopping.EXIT_STATUS
    except (DataError, InputError, checkpoint.CheckpointError,
            train.TrainingError, visualize.ExplainError,
            report.ReportError) as e:
        sys.stderr.write('error: %s\n' % e)
        return 1
    except OSError as e:  # a folder or file the system refuses, a full disk
        sys.stderr.write('error: %s%s\n' % (
            e.strerror or e, ': %s' % e.filename if e.filename else ''))
        return 1
    except MemoryError:
        sys.stderr.write('error: out of memory\n')
        return 1
    except KeyboardInterrupt:
        sys.stderr.write('\ninterrupted: the checkpoint of the last finished '
                         'epoch is kept; continue with --resume\n')
        return 130

