"""Training and evaluation with Table 2's recipe, resumable epoch by epoch.

A run folder holds config.json (what it ran with), log.csv (one row per
epoch), checkpoint.npz (everything needed to continue: parameters, BN
averages, momentum buffers, epoch, RNG state), model.npz (the final
weights, small enough to share) and metrics.json (the final evaluation).
"""
import contextlib
import glob
import json
import math
import numbers
import os
import sys
import time

import numpy as np
import lasagne
import theano
import theano.tensor as T
from PIL import Image

from . import (archives, atomic, batches, checkpoint, cifar10, images,
               inference, options, paper, resnet, runfolder, stopping)
from .errors import DataError, TrainingError
from .models import build_model

floatX = theano.config.floatX


# Named recipes (--recipe): the paper's, and He et al.'s for the ResNet-20
# control. Options given beside a name override its values.
RECIPES = {'table2': paper.TABLE2, 'he2016': resnet.HE2016}


def default_config(**overrides):
    """The recipe named by overrides['recipe'] (default: Table 2) plus what
    a run needs to be repeatable, then the overrides; every key is a
    command-line option of run_cifar10.py train. A config saved before
    recipes had names is a Table 2 one, its own values overriding."""
    name = overrides.get('recipe', 'table2')
    recipe = RECIPES.get(name, paper.TABLE2) if isinstance(
        name, str) else paper.TABLE2  # check_config refuses a bad name
    config = dict(recipe, recipe=name, model='gcm',
                  data='cifar10', data_dir='data', download=True,
                  image_size=None, validation=0, train_subset=0, seed=1)
    unknown = set(overrides) - set(config)
    if unknown:
        raise ValueError('unknown option(s): %s' % ', '.join(sorted(unknown)))
    config.update(overrides)
    config['lr_steps'] = list(config['lr_steps'])
    return config


# the recipe's numeric options, checked with the command line's limits
CHECKED = ('epochs', 'batch_size', 'learning_rate', 'lr_factor', 'momentum',
           'weight_decay', 'pad', 'validation', 'train_subset', 'seed')


def check_config(config):
    """Refuse, before anything is loaded, a recipe that cannot train."""
    if not isinstance(config['recipe'], str) or \
            config['recipe'] not in RECIPES:
        raise TrainingError('--recipe %s: must be one of %s'
                            % (config['recipe'], ', '.join(RECIPES)))
    for key in CHECKED:
        value, limit = config[key], options.OPTIONS[key]
        if (not isinstance(value, numbers.Real) or isinstance(value, bool)
                or not limit.ok(value)):
            raise TrainingError('--%s %s: must be %s'
                                % (key.replace('_', '-'), value, limit.what))
    steps = config['lr_steps']
    if not isinstance(steps, (list, tuple)) or not all(
            isinstance(s, int) and s >= 1 for s in steps):
        raise TrainingError('--lr-steps %s: must be epochs (positive '
                            'integers)' % (steps,))
    # a recipe's own steps stay the recipe of a shorter run (a constant
    # rate); steps given for it must fall inside it (a step at its last
    # epoch counts when the run is resumed for more epochs)
    if list(config['lr_steps']) != list(RECIPES[config['recipe']]['lr_steps']):
        for step in config['lr_steps']:
            if not 1 <= step <= config['epochs']:
                raise TrainingError(
                    '--lr-steps %s: the rate would change after epoch %s, '
                    'but the run ends with epoch %d (--epochs)'
                    % (' '.join(map(str, config['lr_steps'])), step,
                       config['epochs']))


def check_data(config, X, classes):
    """What the options ask of the training images, once they are loaded."""
    if len(classes) < 2:
        raise TrainingError('the training data has %d class (%s); a '
                            'classifier needs at least 2'
                            % (len(classes), ', '.join(classes)))
    if config['batch_size'] > len(X):
        raise TrainingError('--batch-size %d is larger than the %d training '
                            'images' % (config['batch_size'], len(X)))
    if config['pad'] >= min(X.shape[2:]):
        raise TrainingError('--pad %d: must be smaller than the images (%dx%d)'
                            % ((config['pad'],) + X.shape[2:]))


def learning_rate(config, epoch):
    """Epochs count from 1; the rate is divided after each epoch in
    lr_steps (Table 2: epochs 1-100 at 0.1, 101-150 at 0.01, then 0.001)."""
    drops = sum(1 for step in config['lr_steps'] if epoch > step)
    return config['learning_rate'] * config['lr_factor'] ** drops


def _load_dataset(config, splits=('train', 'test')):
    """The data set the config names, as `cifar10.load_cifar10` returns it;
    from an image folder only the splits asked for are decoded."""
    size = config['image_size']
    if size is not None and (size[0] % 4 or size[1] % 4 or
                             size[0] * size[1] > Image.MAX_IMAGE_PIXELS):
        # the network halves the size twice; a size Pillow would refuse to
        # open is one no memory holds a data set of
        raise TrainingError('--image-size %d %d: rows and columns must be '
                            'multiples of 4, at most %d pixels in all'
                            % (tuple(size) + (Image.MAX_IMAGE_PIXELS,)))
    if config['data'] == 'cifar10':
        return cifar10.load_cifar10(config['data_dir'],
                                    download=config['download'])
    folder = config['data']
    if archives.is_archive(folder):
        folder = archives.unpacked_image_folder(folder, config['data_dir'])
    return images.load_image_folder(folder,
                                    size=tuple(size) if size else None,
                                    splits=splits)


def load_data(config):
    """Train and evaluation arrays as the config asks: the test set, or
    with `validation` > 0 a held-out part of the training set instead."""
    d = _load_dataset(config)
    X, y = d['X_train'], d['y_train']
    if config['validation'] >= len(y):
        raise TrainingError('--validation %d: must be fewer than the %d '
                            'training images' % (config['validation'], len(y)))
    if config['validation']:
        (X, y), (X_eval, y_eval) = batches.split_validation(
            X, y, config['validation'], config['seed'])
    else:
        X_eval, y_eval = d['X_test'], d['y_test']
    if config['train_subset'] > len(y):
        raise TrainingError('--train-subset %d: there are only %d training '
                            'images%s' % (config['train_subset'], len(y),
                                          ' besides --validation'
                                          if config['validation'] else ''))
    if config['train_subset']:
        X, y = batches.subset(X, y, config['train_subset'], config['seed'])
    return X, y, X_eval, y_eval, list(d['classes'])


def load_test_data(meta, override=None):
    """The test images of the data a saved model was trained on (or of the
    data `override` names), checked against the model's classes."""
    saved = meta.get('config')
    if not isinstance(saved, dict):
        if not override:
            raise DataError('the model file does not say what data it '
                                 'was trained on; give --data')
        saved = {}
    config = dict(default_config(), **saved)  # keys an older file lacks
    config.update(override or {})
    d = _load_dataset(config, splits=('test',))
    X, y, classes = d['X_test'], d['y_test'], list(d['classes'])
    if classes != list(meta['classes']):
        raise DataError("the data's classes %s are not the model's %s"
                             % (classes, meta['classes']))
    if X.shape[1:] != tuple(meta['input_shape']):
        raise DataError('the test images are %s (channels, rows, cols), '
                             'the model takes %s; give --image-size'
                             % (X.shape[1:], tuple(meta['input_shape'])))
    return X, y


def _loss_and_prediction(prob, y):
    loss = lasagne.objectives.categorical_crossentropy(prob, y)
    return loss, T.argmax(prob, axis=1)


def compile_eval(net):
    """Per-image loss and predicted class; deterministic, so BN uses its
    running averages, folded into the convolutions (inference.py: the
    function follows the parameters as training moves them)."""
    y = T.ivector('y')
    return theano.function([net['input'].input_var, y], _loss_and_prediction(
        inference.get_output(net['prob']), y))


def compile_train(net, config, profile=False):
    """The training step (momentum SGD, summed loss and number correct of a
    batch) as one theano.function. The rate is a shared variable, so the
    schedule needs no recompile. Returns (function, rate, momentum
    buffers); profile=True turns on Theano's profiler."""
    y = T.ivector('y')
    lr = theano.shared(np.asarray(config['learning_rate'], floatX), 'lr')
    loss, prediction = _loss_and_prediction(
        lasagne.layers.get_output(net['prob'], deterministic=False), y)
    objective = loss.mean()
    if config['weight_decay']:
        objective += config['weight_decay'] * lasagne.regularization.\
            regularize_network_params(net['prob'], lasagne.regularization.l2)
    params = lasagne.layers.get_all_params(net['prob'], trainable=True)
    updates = lasagne.updates.momentum(objective, params, lr,
                                       config['momentum'])
    train_fn = theano.function([net['input'].input_var, y],
                               [loss.sum(), T.eq(prediction, y).sum()],
                               updates=updates, profile=profile)
    return train_fn, lr, [v for v in updates if v not in params]


def evaluate(eval_fn, X, y, batch_size=256):
    """Mean loss and the predicted classes over uint8 images X."""
    total, predictions = 0.0, []
    for Xb, yb in batches.iterate_minibatches(X, y, batch_size):
        loss, pred = eval_fn(batches.to_float(Xb), yb)
        total += float(np.sum(loss))
        predictions.append(pred)
    return total / len(y), np.concatenate(predictions)


def confusion(y_true, y_pred, num_classes):
    m = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(m, (y_true, y_pred), 1)
    return m


def _progress(epoch, done, total, loss, acc):
    """A live line on a terminal; in a log file, a line each quarter epoch
    of a long one."""
    text = 'epoch %d  %d/%d  loss %.4f  acc %.4f' % (epoch, done, total,
                                                    loss, acc)
    if sys.stderr.isatty():
        sys.stderr.write('\r' + text + ' ')
        sys.stderr.flush()
    elif total >= 100 and done < total and done % (total // 4) == 0:
        print(text, flush=True)


def _echo(text):
    print(text, flush=True)


def _rng_state(rng):
    name, keys, pos, has_gauss, gauss = rng.get_state()
    return np.array(keys), np.array([pos, has_gauss]), np.array(gauss)


def _set_rng_state(rng, arrays):
    pos, has_gauss = arrays['rng_pos']
    rng.set_state(('MT19937', arrays['rng_keys'], int(pos), int(has_gauss),
                   float(arrays['rng_gauss'])))


def _saved_config(meta, given, path, epochs_done):
    """The recipe of the run being resumed, checked against the options
    the user gave again (`given`, None for those left out; see
    runfolder.check_resume)."""
    if not isinstance(meta.get('config'), dict):
        raise checkpoint.CheckpointError('%s holds no training config' % path)
    saved = meta['config']
    saved = dict(default_config(recipe=saved.get('recipe', 'table2')),
                 **saved)
    config, notes = runfolder.check_resume(saved, given,
                                           os.path.dirname(path), epochs_done)
    check_config(config)
    return config, notes


def _checkpoint_epoch(arrays, path):
    """The last finished epoch a training checkpoint holds."""
    try:
        epoch = int(arrays['epoch'])
    except KeyError as e:
        raise checkpoint.CheckpointError('%s is not a training checkpoint '
                                         '(it lacks %s)' % (path, e))
    except (TypeError, ValueError) as e:
        raise checkpoint.CheckpointError('%s holds a broken training state '
                                         '(%s)' % (path, e))
    if epoch < 1:
        raise checkpoint.CheckpointError('%s: epoch %d' % (path, epoch))
    return epoch


def _saved_state(path, saved, net):
    """Set a checkpoint's parameters on the network and check the rest of
    its training state, before anything is compiled; returns (momentum
    buffers, RNG state)."""
    _, values, arrays = saved
    checkpoint.set_values(net, values, path)
    try:
        buffers = []
        for i, p in enumerate(lasagne.layers.get_all_params(net['prob'],
                                                            trainable=True)):
            name = 'velocity_%d' % i  # compile_train's buffers, in this order
            buffers.append(checkpoint.checked_float(path, name, arrays[name]))
            if buffers[-1].shape != p.get_value(borrow=True).shape:
                raise ValueError('%s has shape %s, expected %s' % (
                    name, buffers[-1].shape, p.get_value(borrow=True).shape))
        _set_rng_state(np.random.RandomState(), arrays)
    except KeyError as e:
        raise checkpoint.CheckpointError('%s is not a training checkpoint '
                                         '(it lacks %s)' % (path, e))
    except (IndexError, TypeError, ValueError) as e:
        raise checkpoint.CheckpointError('%s holds a broken training state '
                                         '(%s)' % (path, e))
    return buffers, arrays


def _stop(what, epoch, lr):
    raise TrainingError('%s in epoch %d (learning rate %g); stopped, %s'
                        % (what, epoch, lr.get_value(),
                           'the checkpoint of epoch %d is kept' % (epoch - 1)
                           if epoch > 1 else 'no checkpoint was written'))


def train(config, out_dir, resume=False, overwrite=False, echo=_echo):
    """Train config['model'] into out_dir; returns the final metrics.

    A folder that holds a run is never silently replaced: a new run there
    refuses unless overwrite=True. resume=True continues the run in
    out_dir and refuses if there is none (a mistyped folder must not start
    a new run unnoticed); `config` then holds the options the user gave
    again (None for those left out): they must agree with the run's
    recipe, except that the epochs may grow and the data may have moved
    (runfolder.check_resume)."""
    with contextlib.ExitStack() as held:
        return _train(config, out_dir, resume, overwrite, echo, held)


def _train(config, out_dir, resume, overwrite, echo, held):
    ckpt_path = os.path.join(out_dir, 'checkpoint.npz')
    log_path = os.path.join(out_dir, 'log.csv')
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise TrainingError('%s is a file, not a run folder' % out_dir)
    replaced, notes = [], []
    # from here on a SIGTERM stops the run where it can be resumed
    stop = held.enter_context(stopping.on_sigterm())
    done = 0
    if resume:
        if not os.path.exists(ckpt_path):
            raise TrainingError('nothing to resume: %s holds no checkpoint '
                                '(no finished epoch); leave out --resume to '
                                'start a run there' % out_dir)
        saved = checkpoint.read(ckpt_path)
        done = _checkpoint_epoch(saved[2], ckpt_path)
        config, notes = _saved_config(saved[0], config, ckpt_path, done)
    else:
        check_config(config)
        replaced = runfolder.check_new_run(out_dir, overwrite)

    X, y, X_eval, y_eval, classes = load_data(config)
    check_data(config, X, classes)
    if resume:
        runfolder.check_same_data(saved[0], classes, X.shape[1:], len(X),
                                  len(X_eval), out_dir)
    stop.check(done + 1, 0, 0, done)  # before the run folder is touched
    input_shape = X.shape[1:]
    lasagne.random.set_rng(np.random.RandomState(config['seed']))
    try:
        net = build_model(config['model'], len(classes), input_shape,
                          input_var=T.tensor4('x'))
    except ValueError as e:  # an image size the network cannot take
        raise TrainingError('%s; resize the images with --image-size' % e)
    if 'centre' in net:
        net['centre'].pixel_mean.set_value(batches.pixel_mean(X))
    if resume:
        buffers, state = _saved_state(ckpt_path, saved, net)
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise TrainingError('cannot create the run folder %s (%s)'
                            % (out_dir, e.strerror))
    held.enter_context(runfolder.lock(out_dir))
    # temporary files of a checkpoint write that was killed
    for tmp in glob.glob(os.path.join(glob.escape(out_dir), '*.tmp.npz')):
        os.remove(tmp)
    train_fn, lr, velocities = compile_train(net, config)
    eval_fn = compile_eval(net)
    rng = np.random.RandomState([config['seed'], 1])  # shuffling, augmenting
    meta = {'model': config['model'], 'classes': classes,
            'input_shape': list(input_shape), 'config': config,
            'train_images': len(X), 'eval_images': len(X_eval)}
    if resume:
        for v, value in zip(velocities, buffers):
            v.set_value(value)
        _set_rng_state(rng, state)
        start = done
        echo('resuming %s after epoch %d' % (out_dir, start))
        if config['epochs'] > start:  # a finished run's files say "done"
            notes += ['kept the finished run\'s %s' % name
                      for name in runfolder.set_aside(out_dir, start)]
    else:
        start = 0
        if replaced:
            runfolder.remove(out_dir, replaced)
            notes.append('replaced the run that was in %s (%s)'
                         % (out_dir, ', '.join(replaced)))
    dropped = runfolder.trim_log(log_path, start)
    if dropped:
        notes.append('dropped %d row(s) of log.csv after epoch %d or cut '
                     'short (no checkpoint has them)' % (dropped, start))
    for note in notes:
        echo(note)
    atomic.write_text(os.path.join(out_dir, 'config.json'),
                      json.dumps(config, indent=2, sort_keys=True))

    augment = (lambda Xb: batches.augment(Xb, rng, config['pad'],
                                          config['flip']))
    eval_name = 'val' if config['validation'] else 'test'
    n_batches = int(math.ceil(len(y) / float(config['batch_size'])))
    # a NaN or inf momentum buffer reaches its parameter in the same update;
    # checking the parameters costs about 0.6 ms a step (GCM, 72 arrays)
    watched = lasagne.layers.get_all_params(net['prob'])
    for epoch in range(start + 1, config['epochs'] + 1):
        stop.check(epoch, 0, n_batches, epoch - 1)
        t0 = time.time()
        lr.set_value(np.asarray(learning_rate(config, epoch), floatX))
        total, correct, seen = 0.0, 0, 0
        for i, (Xb, yb) in enumerate(batches.iterate_minibatches(
                X, y, config['batch_size'], shuffle=True, rng=rng,
                augment_fn=augment)):
            loss, right = train_fn(batches.to_float(Xb), yb)
            if not np.isfinite(loss):
                _stop('the training loss became %s' % loss, epoch, lr)
            for p in watched:  # the loss is computed before the update
                if not np.isfinite(p.get_value(borrow=True)).all():
                    _stop('%s became NaN or infinite' % p, epoch, lr)
            total, correct, seen = total + loss, correct + right, seen + len(yb)
            _progress(epoch, i + 1, n_batches, total / seen, correct / seen)
            if i + 1 < n_batches:  # after the last, evaluating and saving
                stop.check(epoch, i + 1, n_batches, epoch - 1)  # is quicker
        eval_loss, pred = evaluate(eval_fn, X_eval, y_eval)
        if not np.isfinite(eval_loss):
            _stop('the %s loss became %s' % (eval_name, eval_loss), epoch, lr)
        eval_acc = float(np.mean(pred == y_eval))
        row = {'epoch': epoch,
               'learning_rate': float('%.6g' % learning_rate(config, epoch)),
               'train_loss': round(total / seen, 5),
               'train_acc': round(correct / float(seen), 5),
               'eval_loss': round(eval_loss, 5), 'eval_acc': round(eval_acc, 5),
               'seconds': round(time.time() - t0, 1)}
        # the log row first: a resume drops rows newer than the checkpoint
        runfolder.write_log(log_path, [row], 'a')
        keys, pos, gauss = _rng_state(rng)
        checkpoint.save(ckpt_path, net, meta, epoch=np.array(epoch),
                        rng_keys=keys, rng_pos=pos, rng_gauss=gauss,
                        **{'velocity_%d' % i: v.get_value()
                           for i, v in enumerate(velocities)})
        if sys.stderr.isatty():
            sys.stderr.write('\r')
        echo('epoch %3d  lr %.4g  train loss %.4f acc %.4f  %s loss %.4f '
             'acc %.4f  %.0fs' % (epoch, row['learning_rate'],
                                  row['train_loss'], row['train_acc'],
                                  eval_name, eval_loss, eval_acc,
                                  row['seconds']))

    checkpoint.save(os.path.join(out_dir, 'model.npz'), net, meta)
    if start >= config['epochs']:  # nothing trained here: evaluate now
        eval_loss, pred = evaluate(eval_fn, X_eval, y_eval)
    metrics = classification_metrics(y_eval, pred, classes)
    metrics.update(eval_set=eval_name, loss=eval_loss, epochs=config['epochs'],
                   params=int(lasagne.layers.count_params(net['prob'],
                                                          trainable=True)))
    atomic.write_text(os.path.join(out_dir, 'metrics.json'),
                      json.dumps(metrics, indent=2))
    return metrics


def classification_metrics(y, pred, classes):
    """Accuracy, per-class accuracy and the confusion matrix (rows: true
    class, columns: predicted)."""
    m = confusion(y, pred, len(classes))
    per_class = m.diagonal() / np.maximum(m.sum(axis=1), 1)
    return {'accuracy': float((pred == y).mean()),
            'per_class_accuracy': dict(zip(classes, per_class.tolist())),
            'confusion_matrix': m.tolist(), 'classes': classes}
