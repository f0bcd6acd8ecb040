#!/usr/bin/env python
"""Issue 11: what `run_cifar10.py faithfulness` costs per image, per method
and per metric, and what that makes of 1,000 images with every method.

    .venv/bin/python benchmarks/faithfulness_cost.py --data /path/to/cifar10-jpeg --images 100
    .venv/bin/python benchmarks/faithfulness_cost.py              # the 30 shipped samples

Models: the shipped GCM and an untrained CNN baseline (the cost of the
metrics does not depend on the weights). Compiles are done before timing.
Run it on an idle machine: the load average (/proc/loadavg) is printed
before and after, and a load above the number of cores means the numbers
are not clean. The extrapolation assumes the defaults of the command
(faithfulness_run.DEFAULTS: 16 deletion steps, 32 IG steps, 25
randomisation images, which do not grow with --images); reading the test
images is not included.
"""
import argparse
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import gcm_lasagne  # noqa: E402,F401  (configures Theano)
from gcm_lasagne import attribution as attr  # noqa: E402
from gcm_lasagne import checkpoint, shipped, train  # noqa: E402
from gcm_lasagne.images import read_images  # noqa: E402
from gcm_lasagne import faithfulness as faith
from gcm_lasagne import faithfulness_run as faith_run  # noqa: E402



def loadavg():
    with open('/proc/loadavg') as f:
        return f.read().split()[0]


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--data', help='image folder with test/<class>/ '
                   '(default: the shipped 30 samples)')
    p.add_argument('--images', type=int, default=100)
    p.add_argument('--randomisation-images', type=int, default=10)
    args = p.parse_args()

    net, meta, _ = checkpoint.load(shipped.model_path())
    if args.data:
        X, _ = train.load_test_data(meta, dict(data=args.data))
        X = X[faith_run.choose_images(len(X), args.images)]
    else:
        X = read_images(shipped.sample_paths(), meta['input_shape'])
    cnn_meta = dict(meta, model='cnn')
    models = [('gcm', net, meta),
              ('cnn', faith.fresh_network(cnn_meta, seed=1), cnn_meta)]
    print('load average before: %s; %d images, %d for randomisation'
          % (loadavg(), len(X), args.randomisation_images))
    rows, totals = [], {}
    for tag, model, m in models:
        a = attr.Attribution(model, name=tag)
        t = a.scores(X)[0].argmax(axis=1).astype(np.int32)
        for method in a.methods:          # compile outside the timing
            a.maps(method, X[:2], t[:2])
        r = faith_run.evaluate_model(
            a, X, t, a.methods,
            randomisation_images=args.randomisation_images,
            fresh_net=faith.fresh_network(m, seed=2))
        per_image = 0.0
        for method in a.methods:
            parts = [r['seconds'][method, part] / len(X)
                     for part in ('maps', 'deletion+insertion', 'road')]
            per_image += sum(parts)
            rows.append((tag, method) + tuple(parts))
        rand = r['seconds']['all', 'randomisation'] / args.randomisation_images
        rows.append((tag, 'randomisation, per image', rand, 0, 0))
        totals[tag] = (1000 * per_image
                       + faith_run.DEFAULTS['randomisation_images'] * rand)
    print('\n%-4s %-26s %9s %19s %9s' % ('', 'seconds per image', 'maps',
                                          'deletion+insertion', 'ROAD'))
    for row in rows:
        print('%-4s %-26s %9.4f %19.4f %9.4f' % row)
    print('\n1,000 images, every method, %d randomisation images: '
          % faith_run.DEFAULTS['randomisation_images']
          + ', '.join('%s %.0f s' % kv for kv in totals.items())
          + ', together %.0f s (target: 900 s)' % sum(totals.values()))
    print('load average after: %s' % loadavg())


if __name__ == '__main__':
    main()
