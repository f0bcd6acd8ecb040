"""A run folder's files, so that nothing a user has trained is replaced or
misdescribed: what counts as a run, the log (read back only as far as it
is whole), the lock that keeps two trainings out of one folder, and what a
resume may and may not change."""
import contextlib
import csv
import io
import fcntl
import math
import os

from . import atomic
from .errors import TrainingError

RUN_FILES = ('model.npz', 'checkpoint.npz', 'metrics.json', 'log.csv',
             'config.json')
LOG_FIELDS = ['epoch', 'learning_rate', 'train_loss', 'train_acc',
              'eval_loss', 'eval_acc', 'seconds']


class RunFolderError(TrainingError):
    """A request that would replace or contradict the run in a folder."""


def read_log_rows(path, last_epoch=None):
    """The whole rows of log.csv, epochs 1, 2, ... in order up to
    `last_epoch`, and how many rows were dropped: rows after it (written
    after the last checkpoint, then interrupted), a row cut in the middle
    (a field missing or not a number), or anything edited into something
    else."""
    if not os.path.exists(path):
        return [], 0
    kept, dropped = [], 0
    with open(path, newline='') as f:
        for row in csv.DictReader(f):
            if _whole(row, len(kept) + 1) and (
                    last_epoch is None or int(row['epoch']) <= last_epoch):
                kept.append(row)
            else:
                dropped += 1
    return kept, dropped


def _whole(row, expected_epoch):
    if row.get('epoch') != str(expected_epoch):
        return False
    for key in LOG_FIELDS:
        if key in row:
            try:
                if not math.isfinite(float(row[key])):
                    return False
            except (TypeError, ValueError):
                return False
    return True


def write_log(path, rows, mode):
    """Write ('w') or append ('a') rows, all or nothing: the log is
    rewritten whole beside itself and renamed (it is a few kB)."""
    text = io.StringIO()
    writer = csv.DictWriter(text, LOG_FIELDS, extrasaction='ignore',
                            lineterminator='\r\n')
    if mode == 'a' and os.path.exists(path):
        with open(path, newline='') as f:
            text.write(f.read())
    else:
        writer.writeheader()
    writer.writerows(rows)
    atomic.write_text(path, text.getvalue())


def trim_log(path, last_epoch):
    """Keep only the whole rows of epochs up to the checkpoint's, so a
    resumed run's log has each epoch once; returns how many were dropped."""
    if not os.path.exists(path):
        return 0
    rows, dropped = read_log_rows(path, last_epoch)
    write_log(path, rows, 'w')
    return dropped


def work_in(out_dir):
    """The run files in out_dir that hold work. A folder whose run stopped
    before its first epoch ended (a config.json, a log without rows) holds
    none: starting there again loses nothing."""
    present = [f for f in RUN_FILES
               if os.path.isfile(os.path.join(out_dir, f))]
    if set(present) <= {'config.json', 'log.csv'} and not read_log_rows(
            os.path.join(out_dir, 'log.csv'))[0]:
        return []
    return present


def check_new_run(out_dir, overwrite):
    """Refuse to start a run where one is, unless asked to replace it;
    returns the files that will be replaced."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise RunFolderError('%s is a file, not a run folder' % out_dir)
    present = work_in(out_dir) if os.path.isdir(out_dir) else []
    if present and not overwrite:
        raise RunFolderError(
            '%s already holds a run (%s); use --resume to continue it, '
            '--overwrite to replace it, or choose another --out'
            % (out_dir, ', '.join(present)))
    return present


def remove(out_dir, names):
    for name in names:
        path = os.path.join(out_dir, name)
        if os.path.exists(path):
            os.remove(path)


def set_aside(out_dir, epochs):
    """Before a finished run is extended: its model.npz and metrics.json
    describe the weights after `epochs` epochs, which the next epoch's
    checkpoint replaces, so they are kept under names that say so."""
    moved = []
    for name in ('model.npz', 'metrics.json'):
        path = os.path.join(out_dir, name)
        if os.path.exists(path):
            stem, ext = os.path.splitext(name)
            target = '%s-epoch%d%s' % (stem, epochs, ext)
            os.replace(path, os.path.join(out_dir, target))
            moved.append(target)
    return moved


# A resume keeps its run's recipe: the options it may be given again are
# these, equal to the run's; --epochs may grow the run, and the data may
# have moved (it is checked by what it holds, not where it is).
MAY_MOVE = ('data', 'data_dir', 'download', 'epochs')


def check_resume(saved, given, out_dir, epochs_done):
    """`saved`: the run's config; `given`: the options the user gave
    (None for those left out). Raises on a contradiction; returns the
    config to continue with and what to say about it."""
    config, notes = dict(saved), []
    for key, value in given.items():
        if value is None or key in MAY_MOVE:
            continue
        ran = saved.get(key)
        same = (list(value) == list(ran or []) if isinstance(value, (list, tuple))
                else value == ran)
        if not same:
            raise RunFolderError(
                '--%s %s: the run in %s was trained with %s; a resume keeps '
                'its run\'s recipe (only --epochs may change)'
                % (key.replace('_', '-'), _shown(value), out_dir,
                   _shown(ran)))
    for key in ('data', 'data_dir', 'download'):
        if given.get(key) is not None:
            config[key] = given[key]
    epochs = given.get('epochs')
    if epochs is not None:
        if epochs < epochs_done:
            raise RunFolderError(
                '--epochs %d: the run in %s has done %d epochs already; a '
                'resume can only keep or lengthen it' % (epochs, out_dir,
                                                         epochs_done))
        if epochs != saved['epochs']:
            notes.append('%s the run from %d to %d epochs' % (
                'lengthening' if epochs > saved['epochs'] else 'shortening',
                saved['epochs'], epochs))
        config['epochs'] = epochs
    return config, notes


def _shown(value):
    if isinstance(value, (list, tuple)):
        return ' '.join(map(str, value)) or '(none)'
    return str(value)


def check_same_data(meta, classes, input_shape, n_train, n_eval, out_dir):
    """The data a resume trains on is the run's: the same classes, image
    size and numbers of images (checkpoints written before the numbers
    were recorded are checked on classes and size alone)."""
    ran = [('classes', meta.get('classes'), list(classes)),
           ('image shape', meta.get('input_shape'), list(input_shape)),
           ('training images', meta.get('train_images'), n_train),
           ('evaluation images', meta.get('eval_images'), n_eval)]
    for what, theirs, ours in ran:
        if theirs is not None and theirs != ours:
            raise RunFolderError(
                "the data's %s (%s) are not those of the run in %s (%s): "
                'give --data the folder it was trained on'
                % (what, _shown(ours), out_dir, _shown(theirs)))


@contextlib.contextmanager
def lock(out_dir):
    """Hold an exclusive lock on the run folder: a second training into the
    same folder would delete this one's temporary checkpoint and write its
    own epochs into the same log."""
    with open(os.path.join(out_dir, '.lock'), 'a') as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunFolderError('%s is in use by another training process; '
                                 'wait for it or choose another --out'
                                 % out_dir)
        except OSError:
            pass  # a file system without locks: train unguarded, as before
        yield  # closing the file releases the lock, even if killed
