"""`reproduce` as independent jobs, for a scheduler: the `train` commands
it would run, one a line, and what each job does when it is started again
(a requeue, a resubmission) in its run folder.

A line is the arguments of one `run_cifar10.py` call, quoted for a POSIX
shell, so a job script can put whatever runs the program in front of it
(a virtual environment's python, a container). Each line carries every
recipe and data option that `reproduce` was given, so the runs are the
ones `reproduce` would train; `tests/test_jobs.py` parses the lines back
and compares the configs.
"""
import argparse
import os
import shlex

from . import checkpoint, report, runfolder, train

# options of the job list's parser that are not the train command's
NOT_TRAIN_OPTIONS = ('seeds',)


def lines(args, train_parser, models, run_name):
    """One `train` command a run, in the order `reproduce` trains them:
    seeds 1..args.seeds, each with every model of `models`, into
    args.runs/run_name(model, seed)."""
    options = given_options(args, train_parser)
    for seed in range(1, args.seeds + 1):
        for model in models:
            out = os.path.join(args.runs, run_name(model, seed))
            words = (['train', '--auto-resume', '--model', model,
                      '--seed', str(seed), '--out', out] + options)
            yield ' '.join(shlex.quote(w) for w in words)


def given_options(args, train_parser):
    """args' recipe and data options as `train` command-line words: each
    option whose value is not the train command's default. Read from the
    parser's own actions, so an option added to both commands later is
    carried without a change here."""
    words = []
    for action in train_parser._actions:  # argparse lists them nowhere else
        if (not action.option_strings or action.dest in NOT_TRAIN_OPTIONS
                or not hasattr(args, action.dest)):
            continue
        value = getattr(args, action.dest)
        if value is None or value == action.default:
            continue
        flag = max(action.option_strings, key=len)  # the long spelling
        if action.nargs == 0:  # a switch: --no-flip, --no-download
            words.append(flag)
        elif isinstance(value, (list, tuple)):
            words += [flag] + [str(v) for v in value]
        else:
            words += [flag, str(value)]
    return words


def subcommand(parser, name):
    """The parser of one command of `parser`."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[name]
    raise KeyError(name)


def _completed(saved):
    """A run's saved config with its recipe's values where it predates an
    option."""
    return dict(train.default_config(recipe=saved.get('recipe', 'table2')),
                **saved)


def auto_mode(out_dir, given):
    """What `train --auto-resume` does in out_dir: 'start' (the folder
    holds no run), 'resume' (it holds a checkpoint to continue) or 'done'
    (it holds the finished run, with as many epochs as asked for).
    `given`: the options of the command (None where left out); they are
    checked against a finished run as a resume would check them, so a
    job list for another recipe is refused rather than called done."""
    ckpt = os.path.join(out_dir, 'checkpoint.npz')
    if not os.path.isfile(ckpt):
        return 'start'  # a folder with other run files is refused there
    if not os.path.isfile(os.path.join(out_dir, 'metrics.json')):
        return 'resume'
    meta, _, arrays = checkpoint.read(ckpt)
    saved = meta.get('config')
    try:
        epochs_done = int(arrays['epoch'])
    except (KeyError, TypeError, ValueError):
        saved = None
    if not isinstance(saved, dict):
        return 'resume'  # the resume says what is wrong with the file
    config, _ = runfolder.check_resume(_completed(saved), given, out_dir,
                                       epochs_done)
    return 'done' if config['epochs'] <= epochs_done else 'resume'


def finished(out_dir, given):
    """Whether `reproduce` may skip out_dir: it holds the finished run that
    `given` asks for. The run is checked against the options as a resume
    checks them, from its checkpoint, or from its config.json where it has
    none (a model folder copied from models/): a finished run of another
    recipe or length is refused (RunFolderError), not called done."""
    if not os.path.isfile(os.path.join(out_dir, 'metrics.json')):
        return False
    if os.path.isfile(os.path.join(out_dir, 'checkpoint.npz')):
        return auto_mode(out_dir, given) == 'done'
    saved, metrics = report.check_run(out_dir)
    config, _ = runfolder.check_resume(_completed(saved), given, out_dir,
                                       metrics['epochs'])
    if config['epochs'] > metrics['epochs']:
        raise runfolder.RunFolderError(
            '--epochs %d: the run in %s ended after %d epochs and has no '
            'checkpoint to continue from' % (config['epochs'], out_dir,
                                             metrics['epochs']))
    return True
