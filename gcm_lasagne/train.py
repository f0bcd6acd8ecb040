"""Training and evaluation with Table 2's recipe, resumable epoch by epoch.

A run folder holds config.json (what it ran with), log.csv (one row per
epoch), checkpoint.npz (everything needed to continue: parameters, BN
averages, momentum buffers, epoch, RNG state), model.npz (the final
weights, small enough to share) and metrics.json (the final evaluation).
"""
import csv
import json
import math
import os
import sys
import time

import numpy as np
import lasagne
import theano
import theano.tensor as T

from . import batches, checkpoint, cifar10, images, paper
from .errors import DataError
from .models import build_model

floatX = theano.config.floatX
LOG_FIELDS = ['epoch', 'learning_rate', 'train_loss', 'train_acc',
              'eval_loss', 'eval_acc', 'seconds']


class TrainingError(Exception):
    pass


def default_config(**overrides):
    """Table 2 plus what a run needs to be repeatable; every key is a
    command-line option of run_cifar10.py train."""
    config = dict(paper.TABLE2, model='gcm', data='cifar10', data_dir='data',
                  download=True, image_size=None, validation=0, train_subset=0, seed=1)
    unknown = set(overrides) - set(config)
    if unknown:
        raise ValueError('unknown option(s): %s' % ', '.join(sorted(unknown)))
    config.update(overrides)
    config['lr_steps'] = list(config['lr_steps'])
    return config


def learning_rate(config, epoch):
    """Epochs count from 1; the rate is divided after each epoch in
    lr_steps (Table 2: epochs 1-100 at 0.1, 101-150 at 0.01, then 0.001)."""
    drops = sum(1 for step in config['lr_steps'] if epoch > step)
    return config['learning_rate'] * config['lr_factor'] ** drops


def load_data(config):
    """Train and evaluation arrays as the config asks: the test set, or
    with `validation` > 0 a held-out part of the training set instead."""
    if config['data'] == 'cifar10':
        d = cifar10.load_cifar10(config['data_dir'],
                                 download=config['download'])
    else:
        size = config['image_size']
        d = images.load_image_folder(config['data'],
                                     size=tuple(size) if size else None)
    X, y = d['X_train'], d['y_train']
    if config['validation']:
        (X, y), (X_eval, y_eval) = batches.split_validation(
            X, y, config['validation'], config['seed'])
    else:
        X_eval, y_eval = d['X_test'], d['y_test']
    if config['train_subset']:
        X, y = batches.subset(X, y, config['train_subset'], config['seed'])
    return X, y, X_eval, y_eval, list(d['classes'])


def load_test_data(meta, override=None):
    """The test images of the data a saved model was trained on (or of the
    data `override` names), checked against the model's classes."""
    config = dict(meta['config'], **(override or {}))
    config.update(validation=0, train_subset=0)
    _, _, X, y, classes = load_data(config)
    if classes != list(meta['classes']):
        raise DataError("the data's classes %s are not the model's %s"
                        % (classes, meta['classes']))
    return X, y


def _loss_and_prediction(net, y, deterministic):
    prob = lasagne.layers.get_output(net['prob'], deterministic=deterministic)
    loss = lasagne.objectives.categorical_crossentropy(prob, y)
    return loss, T.argmax(prob, axis=1)


def compile_eval(net):
    """Per-image loss and predicted class; deterministic, so BN uses its
    running averages."""
    y = T.ivector('y')
    return theano.function([net['input'].input_var, y],
                           _loss_and_prediction(net, y, True))


def compile_train(net, config, profile=False):
    """The training step (momentum SGD, summed loss and number correct of a
    batch) as one theano.function. The rate is a shared variable, so the
    schedule needs no recompile. Returns (function, rate, momentum
    buffers); profile=True turns on Theano's profiler."""
    y = T.ivector('y')
    lr = theano.shared(np.asarray(config['learning_rate'], floatX), 'lr')
    loss, prediction = _loss_and_prediction(net, y, False)
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


def _trim_log(path, last_epoch):
    """Drop log rows of epochs after the checkpoint (written after it and
    then interrupted), so a resumed run's log has each epoch once."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        rows = [r for r in csv.DictReader(f) if int(r['epoch']) <= last_epoch]
    _write_log(path, rows, 'w')


def _write_log(path, rows, mode):
    new = mode == 'w' or not os.path.exists(path)
    with open(path, mode, newline='') as f:
        writer = csv.DictWriter(f, LOG_FIELDS)
        if new:
            writer.writeheader()
        writer.writerows(rows)


def train(config, out_dir, resume=False, echo=_echo):
    """Train config['model'] into out_dir; returns the final metrics."""
    os.makedirs(out_dir, exist_ok=True)
    ckpt_path = os.path.join(out_dir, 'checkpoint.npz')
    log_path = os.path.join(out_dir, 'log.csv')
    if resume and os.path.exists(ckpt_path):
        saved, _, _ = checkpoint.read(ckpt_path)
        # the recipe of a run is fixed; only its length may grow
        config = dict(saved['config'], epochs=config['epochs'])
    elif os.path.exists(ckpt_path):
        raise TrainingError('%s already holds a run; use --resume to continue '
                            'it or choose another --out' % out_dir)

    X, y, X_eval, y_eval, classes = load_data(config)
    input_shape = X.shape[1:]
    lasagne.random.set_rng(np.random.RandomState(config['seed']))
    net = build_model(config['model'], len(classes), input_shape,
                      input_var=T.tensor4('x'))
    if 'centre' in net:
        net['centre'].pixel_mean.set_value(batches.pixel_mean(X))
    train_fn, lr, velocities = compile_train(net, config)
    eval_fn = compile_eval(net)
    rng = np.random.RandomState([config['seed'], 1])  # shuffling, augmenting
    meta = {'model': config['model'], 'classes': classes,
            'input_shape': list(input_shape), 'config': config}
    start = 0
    if resume and os.path.exists(ckpt_path):
        _, values, arrays = checkpoint.read(ckpt_path)
        lasagne.layers.set_all_param_values(net['prob'], values)
        for i, v in enumerate(velocities):
            v.set_value(arrays['velocity_%d' % i])
        _set_rng_state(rng, arrays)
        start = int(arrays['epoch'])
        _trim_log(log_path, start)
        echo('resuming %s after epoch %d' % (out_dir, start))
    with open(os.path.join(out_dir, 'config.json'), 'w') as f:
        json.dump(config, f, indent=2, sort_keys=True)

    augment = (lambda Xb: batches.augment(Xb, rng, config['pad'],
                                          config['flip']))
    eval_name = 'val' if config['validation'] else 'test'
    n_batches = int(math.ceil(len(y) / float(config['batch_size'])))
    for epoch in range(start + 1, config['epochs'] + 1):
        t0 = time.time()
        lr.set_value(np.asarray(learning_rate(config, epoch), floatX))
        total, correct, seen = 0.0, 0, 0
        for i, (Xb, yb) in enumerate(batches.iterate_minibatches(
                X, y, config['batch_size'], shuffle=True, rng=rng,
                augment_fn=augment)):
            loss, right = train_fn(batches.to_float(Xb), yb)
            if not np.isfinite(loss):
                raise TrainingError(
                    'the loss became %s in epoch %d (learning rate %g); '
                    'stopped, %s' % (loss, epoch, lr.get_value(),
                                     'the checkpoint of epoch %d is kept'
                                     % (epoch - 1) if epoch > 1 else
                                     'no checkpoint was written'))
            total, correct, seen = total + loss, correct + right, seen + len(yb)
            _progress(epoch, i + 1, n_batches, total / seen, correct / seen)
        eval_loss, pred = evaluate(eval_fn, X_eval, y_eval)
        eval_acc = float(np.mean(pred == y_eval))
        row = {'epoch': epoch,
               'learning_rate': float('%.6g' % learning_rate(config, epoch)),
               'train_loss': round(total / seen, 5),
               'train_acc': round(correct / float(seen), 5),
               'eval_loss': round(eval_loss, 5), 'eval_acc': round(eval_acc, 5),
               'seconds': round(time.time() - t0, 1)}
        # the log row first: a resume drops rows newer than the checkpoint
        _write_log(log_path, [row], 'a')
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
    with open(os.path.join(out_dir, 'metrics.json'), 'w') as f:
        json.dump(metrics, f, indent=2)
    return metrics


def classification_metrics(y, pred, classes):
    """Accuracy, per-class accuracy and the confusion matrix (rows: true
    class, columns: predicted)."""
    m = confusion(y, pred, len(classes))
    per_class = m.diagonal() / np.maximum(m.sum(axis=1), 1)
    return {'accuracy': float((pred == y).mean()),
            'per_class_accuracy': dict(zip(classes, per_class.tolist())),
            'confusion_matrix': m.tolist(), 'classes': classes}
