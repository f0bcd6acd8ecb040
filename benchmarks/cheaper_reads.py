#!/usr/bin/env python
"""What `evaluate`, `figures` and `faithfulness` spend before the network
runs, and how fast `Model.predict` classifies: each measured as the code
does it now and as it did before commit fe5f088 (issue: "cheaper reads").
Run by hand, from the repository root, on an idle machine:

    .venv/bin/python benchmarks/cheaper_reads.py --data PATH/TO/cifar10-jpeg

- decode: seconds to read the image folder's test images alone (now:
  `load_test_data` asks `load_image_folder` for splits=('test',)) and to
  read both splits (before: the training images were decoded as well and
  thrown away);
- predict: images/s of `Model.predict` on the first --images test images,
  batch 100, with its scores-only function (now), and with one function
  that also draws every class's CWM and CCM and keeps only the scores
  (before: a GCM model had one function for everything). A warm-up call
  first, so compiling is not timed.

Each is repeated --repeats times, the two ways alternating; the median is
printed, of wall time and of this process's CPU time (user + system), with
the load average before and after (above the number of cores, the wall
times are not clean; the CPU times suffer less from other processes).
"""
import argparse
import os
import resource
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

import gcm_lasagne  # noqa: E402  (configures Theano)
from gcm_lasagne import api, shipped  # noqa: E402
from gcm_lasagne.batches import to_float  # noqa: E402
from gcm_lasagne.images import load_image_folder  # noqa: E402


def loadavg():
    with open('/proc/loadavg') as f:
        return f.read().split()[0]


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(fn):
    """(wall seconds, CPU seconds of this process, fn()): on a machine
    that others share, CPU time moves less than wall time."""
    t0, c0 = time.perf_counter(), cpu_seconds()
    out = fn()
    return time.perf_counter() - t0, cpu_seconds() - c0, out


def predict_with_maps(model):
    """Model.predict as it was: one function for the scores, probabilities,
    CWMs and CCMs, of which only the first two are kept."""
    import lasagne
    import theano
    keys = api.MAP_KEYS
    fn = theano.function([model.net['input'].input_var],
                         lasagne.layers.get_output(
                             [model.net[k] for k in keys],
                             deterministic=True))

    def predict(X, size=100):
        scores = [dict(zip(keys, fn(to_float(X[i:i + size]))))
                  ['class_scores'] for i in range(0, len(X), size)]
        return np.concatenate(scores).argmax(axis=1)
    return predict


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--data', required=True,
                   help='image folder with train/<class>/ and test/<class>/')
    p.add_argument('--model', default=shipped.model_path(),
                   help='a GCM model file (default: the shipped GCM)')
    p.add_argument('--images', type=int, default=2000,
                   help='test images to classify (default: %(default)s)')
    p.add_argument('--repeats', type=int, default=3)
    args = p.parse_args()

    print('load average before: %s' % loadavg(), file=sys.stderr)
    decode = {'decode test only (now), s': [],
              'decode train + test (before), s': []}
    for _ in range(args.repeats):
        for name, splits in zip(decode, (('test',), ('train', 'test'))):
            wall, cpu, d = timed(lambda: load_image_folder(args.data,
                                                           splits=splits))
            decode[name].append((wall, cpu))
    X = d['X_test'][:args.images]

    model = api.load_model(args.model)
    model.require_maps()
    now = lambda X: model.predict(X).label  # noqa: E731
    before = predict_with_maps(model)
    agree = (now(X[:100]) == before(X[:100])).all()  # also the warm-up
    rate = {'predict scores only (now), images/s': [],
            'predict with CWM and CCM (before), images/s': []}
    for _ in range(args.repeats):
        for name, fn in zip(rate, (now, before)):
            wall, cpu, _ = timed(lambda: fn(X))
            rate[name].append((len(X) / wall, len(X) / cpu))

    print('load average after: %s' % loadavg(), file=sys.stderr)
    print('| what | median, wall | median, CPU time of the process | '
          'all runs, wall |')
    print('|---|---:|---:|---|')
    form = {'s': '%.1f', 'images/s': '%.0f'}
    for name, values in list(decode.items()) + list(rate.items()):
        f = form[name.rsplit(', ', 1)[1]]
        wall = [v[0] for v in values]
        cpu = [v[1] for v in values]
        print('| %s | %s | %s | %s |' % (
            name, f % np.median(wall), f % np.median(cpu),
            ', '.join(f % v for v in wall)))
    print('\n%d test images classified; both ways give the same labels: %s'
          % (len(X), 'yes' if agree else 'NO'))
    return 0 if agree else 1


if __name__ == '__main__':
    sys.exit(main())
