#!/usr/bin/env python
"""Layer by layer: the fastconv ops' direct code against Winograd with 2x2
and 4x4 tiles, for every stride-1 3x3 and 5x5 layer shape of GCM, the CNN
and ResNet-20, in the three directions a training step runs (forward,
input gradient, weight gradient). This is the measurement behind the
thresholds and tile sizes in gcm_lasagne/c_code/winograd.c.

    .venv/bin/python benchmarks/winograd_layers.py            # ~4 min
    .venv/bin/python benchmarks/winograd_layers.py --quick    # smoke test

Every variant is compiled with the thresholds lowered, so that each runs on
every layer; the table then marks which one the default thresholds pick.
The variants' timed blocks alternate (this machine's speed drifts); each
figure is the median of --repeats blocks of --steps calls, batch --batch.
Run it on an idle machine.
"""
import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

import gcm_lasagne  # noqa: E402,F401  (configures Theano)
import lasagne  # noqa: E402
import theano  # noqa: E402
import theano.tensor as T  # noqa: E402

from gcm_lasagne import fastconv  # noqa: E402
from gcm_lasagne.models import build_model  # noqa: E402
from machine import cpu_name  # noqa: E402

FORCE = {'FC_WINO_MIN_CHANNELS': 1, 'FC_WINO5_MIN_CHANNELS': 1,
         'FC_WINO_MIN_SIZE': 1}
# name: (GCM_WINOGRAD, C defines); DEFAULT, what a user gets, is not
# timed, only compared with the others
VARIANTS = {
    'direct': ('0', {}),
    'F2': ('1', dict(FORCE, FC_WINO4_MIN_SIZE=0)),
    'F4': ('1', dict(FORCE, FC_WINO4_MIN_SIZE=1)),
}
DEFAULT = 'default'
BUILDS = dict(VARIANTS, **{DEFAULT: ('1', {})})
DIRECTIONS = ('forward', 'input grad', 'weight grad')


def layer_shapes(models, side):
    """(channels in, channels out, image side, filter side, models) of every
    stride-1 square 3x3 or 5x5 convolution of the models."""
    shapes = {}
    for model in models:
        net = build_model(model, num_classes=10, input_shape=(3, side, side))
        for layer in lasagne.layers.get_all_layers(net['prob']):
            if (type(layer).__name__ == 'Conv2DLayer'
                    and tuple(layer.stride) == (1, 1)
                    and layer.filter_size[0] == layer.filter_size[1]
                    and layer.filter_size[0] in (3, 5)):
                key = (layer.input_shape[1], layer.num_filters,
                       layer.input_shape[2], layer.filter_size[0])
                if model not in shapes.setdefault(key, []):
                    shapes[key].append(model)
    return sorted(shapes.items(), key=lambda kv: (kv[0][3], -kv[0][2],
                                                  kv[0][0], kv[0][1]))


def compile_directions(variant, k):
    """The three ops of one filter size, compiled for one variant (the ops
    themselves: this measures their C code, not the graph optimizer)."""
    flag, defines = BUILDS[variant]
    os.environ['GCM_WINOGRAD'] = flag
    saved = dict(fastconv._C_DEFINES)
    fastconv._C_DEFINES.update(defines)
    try:
        x, w, dy = T.tensor4('x'), T.tensor4('w'), T.tensor4('dy')
        fwd = theano.function([x, w], fastconv.FastCorrMM('half')(x, w))
        gi = theano.function([w, dy],
                             fastconv.FastCorrMM_gradInputs('half')(w, dy))
        gw = theano.function([x, dy], fastconv.FastCorrMM_gradWeights(
            'half')(x, dy, (k, k)))
    finally:
        fastconv._C_DEFINES.clear()
        fastconv._C_DEFINES.update(saved)
    return fwd, gi, gw


def default_pick(calls, d):
    """Which variant the default build runs: the one whose result has the
    same bits (each sums in its own order)."""
    out = {v: np.asarray(c[d]()) for v, c in calls.items()}
    same = [v for v in VARIANTS
            if np.array_equal(out[v], out[DEFAULT])]
    return same[0] if same else '?'


def measure(args):
    fns = {(v, k): compile_directions(v, k) for v in BUILDS
           for k in (3, 5)}
    rng = np.random.RandomState(0)
    rows = []
    for (c, m, side, k), models in layer_shapes(args.models, args.size):
        X = rng.uniform(-1, 1, (args.batch, c, side, side)).astype('float32')
        Wt = rng.uniform(-1, 1, (m, c, k, k)).astype('float32')
        dY = rng.uniform(-1, 1, (args.batch, m, side, side)).astype('float32')
        calls = {v: (lambda f=fns[v, k]: f[0](X, Wt),
                     lambda f=fns[v, k]: f[1](Wt, dY),
                     lambda f=fns[v, k]: f[2](X, dY)) for v in BUILDS}
        for d, direction in enumerate(DIRECTIONS):
            times = {v: [] for v in VARIANTS}
            for v in VARIANTS:
                calls[v][d]()  # warm-up
            for _ in range(args.repeats):
                for v in VARIANTS:
                    t0 = time.perf_counter()
                    for _ in range(args.steps):
                        calls[v][d]()
                    times[v].append((time.perf_counter() - t0) / args.steps)
            med = {v: statistics.median(t) * 1e3 for v, t in times.items()}
            rows.append(((c, m, side, k), models, direction, med,
                         default_pick(calls, d)))
            print('  %s %s done' % ((c, m, side, k), direction),
                  file=sys.stderr)
    return rows


def markdown(rows, args):
    lines = ['| layer (in, out, side, filter) | models | direction | direct, ms '
             '| F2, ms (x) | F4, ms (x) | default |',
             '|---|---|---|---:|---:|---:|---|']
    for (c, m, side, k), models, direction, med, pick in rows:
        def cell(v):
            if k == 5 and v == 'F4':
                return '-'
            return '%.2f (%.2fx)' % (med[v], med['direct'] / med[v])
        lines.append('| %d, %d, %dx%d, %dx%d | %s | %s | %.2f | %s | %s | %s |'
                     % (c, m, side, side, k, k, ', '.join(models), direction,
                        med['direct'], cell('F2'), cell('F4'), pick))
    lines.append('')
    lines.append('batch %d, median of %d blocks of %d calls, variants '
                 'alternating; %s' % (args.batch, args.repeats, args.steps,
                                      cpu_name()))
    return '\n'.join(lines)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--models', default='gcm,cnn,resnet20')
    p.add_argument('--batch', type=int, default=128)
    p.add_argument('--size', type=int, default=32, help='image side')
    p.add_argument('--repeats', type=int, default=7)
    p.add_argument('--steps', type=int, default=5)
    p.add_argument('--quick', action='store_true',
                   help='tiny sizes: a smoke test, its numbers mean nothing')
    args = p.parse_args(argv)
    args.models = [s for s in args.models.split(',') if s]
    if args.quick:
        args.batch, args.size, args.repeats, args.steps = 2, 16, 1, 1
    return args


def main(argv=None):
    args = parse(argv)
    print(markdown(measure(args), args))


if __name__ == '__main__':
    main()
