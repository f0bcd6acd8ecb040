#!/usr/bin/env python
"""Does Winograd change training? The same short run twice, once with the
direct convolutions (GCM_WINOGRAD=0) and once with Winograd, from the same
seed on the same images; the table gives each epoch's losses and
accuracies side by side and their largest differences.

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
PATHS = (('direct', '0'), ('winograd', '1'))


def run(args, winograd, out):
    env = dict(os.environ, GCM_WINOGRAD=winograd)
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
    args = p.parse_args(argv)
    logs = {}
    with tempfile.TemporaryDirectory(prefix='gcm-winograd-') as tmp:
        for name, flag in PATHS:
            print('training with the %s path' % name, file=sys.stderr)
            logs[name] = run(args, flag, os.path.join(tmp, name))
    print('| epoch | %s |' % ' | '.join(
        '%s, %s' % (c, name) for c in COLUMNS for name, _ in PATHS))
    print('|---:|%s' % ('---:|' * (len(COLUMNS) * len(PATHS))))
    worst = dict.fromkeys(COLUMNS, 0.0)
    for rows in zip(*(logs[name] for name, _ in PATHS)):
        cells = []
        for c in COLUMNS:
            values = [float(r[c]) for r in rows]
            cells += ['%.5f' % v for v in values]
            worst[c] = max(worst[c], abs(values[0] - values[1]))
        print('| %s | %s |' % (rows[0]['epoch'], ' | '.join(cells)))
    print()
    print('largest difference, direct - winograd: %s' % ', '.join(
        '%s %.2g' % item for item in worst.items()))
    print('(%s, %d epochs, %d training images, seed %d)'
          % (args.model, args.epochs, args.train_subset, args.seed))


if __name__ == '__main__':
    main()
