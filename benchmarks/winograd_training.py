#!/usr/bin/env python
"""Does Winograd change training? The same short run with the direct
convolutions (GCM_WINOGRAD=0) and with Winograd, from the same seed on the
same images; the table gives each epoch's losses and accuracies side by
side and their largest differences. With --control, also with Theano's
own convolutions (GCM_FASTCONV=0), which sum in yet another order: any
change of summation order moves a training run by float32 rounding, which
training then amplifies, and the control shows how far that alone goes.

    .venv/bin/python benchmarks/winograd_training.py --data DATA
    .venv/bin/python benchmarks/winograd_training.py --data DATA \\
        --model cnn --epochs 3 --train-subset 5000

DATA is an image folder with train/ and test/ (e.g. the JPEG CIFAR-10).
Each run is `run_cifar10.py train` in its own subprocess and temporary
folder; the whole test split is evaluated after every epoch.
"""
import argparse
import csv
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLUMNS = ('train_loss', 'train_acc', 'eval_loss', 'eval_acc')
PATHS = (('direct', {'GCM_WINOGRAD': '0'}),
         ('winograd', {'GCM_WINOGRAD': '1'}))
CONTROL = ('theano', {'GCM_FASTCONV': '0'})


def run(args, settings, out):
    env = dict(os.environ, **settings)
    cmd = [sys.executable, os.path.join(ROOT, 'run_cifar10.py'), 'train',
           '--model', args.model, '--data', args.data, '--out', out,
           '--epochs', str(args.epochs), '--train-subset',
           str(args.train_subset), '--seed', str(args.seed)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit('training failed: %s' % done.stderr.strip()[-2000:])
    with open(os.path.join(out, 'log.csv')) as f:
        return list(csv.DictReader(f))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--data', required=True)
    p.add_argument('--model', default='gcm')
    p.add_argument('--epochs', type=int, default=3)
    p.add_argument('--train-subset', type=int, default=5000)
    p.add_argument('--seed', type=int, default=1)
    p.add_argument('--control', action='store_true', help="also with "
                   "Theano's own convolutions (several times slower)")
    args = p.parse_args(argv)
    paths = PATHS + ((CONTROL,) if args.control else ())
    logs = {}
    with tempfile.TemporaryDirectory(prefix='gcm-winograd-') as tmp:
        for name, settings in paths:
            print('training with the %s path' % name, file=sys.stderr)
            logs[name] = run(args, settings, os.path.join(tmp, name))
    print('| epoch | %s |' % ' | '.join(
        '%s, %s' % (c, name) for c in COLUMNS for name, _ in paths))
    print('|---:|%s' % ('---:|' * (len(COLUMNS) * len(paths))))
    worst = {name: dict.fromkeys(COLUMNS, 0.0) for name, _ in paths[1:]}
    for rows in zip(*(logs[name] for name, _ in paths)):
        cells = []
        for c in COLUMNS:
            values = [float(r[c]) for r in rows]
            cells += ['%.5f' % v for v in values]
            for (name, _), v in zip(paths[1:], values[1:]):
                worst[name][c] = max(worst[name][c], abs(values[0] - v))
        print('| %s | %s |' % (rows[0]['epoch'], ' | '.join(cells)))
    print()
    for name, diffs in worst.items():
        print('largest difference, direct - %s: %s' % (name, ', '.join(
            '%s %.2g' % item for item in diffs.items())))
    print('(%s, %d epochs, %d training images, seed %d)'
          % (args.model, args.epochs, args.train_subset, args.seed))


if __name__ == '__main__':
    main()
