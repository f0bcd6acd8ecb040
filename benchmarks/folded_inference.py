#!/usr/bin/env python
"""Inference with each batch norm folded into the convolution before it
(gcm_lasagne.inference) against the unfolded deterministic graph. Run from the repository root on an idle machine:

    .venv/bin/python benchmarks/folded_inference.py                 # gcm, cnn
    .venv/bin/python benchmarks/folded_inference.py --models gcm,gcm-clip,cnn,resnet20 --repeats 9

For each model (batch 128, 3x32x32, 10 classes, the probabilities, as
`Model.predict` and evaluation compute them), five functions are compiled
in one process and their timed blocks of --batches calls alternate, round
after round (this machine's speed moves between and within runs):
- unfolded: lasagne's deterministic graph, each convolution followed by
  fastbn.BatchNormInfer with the ReLU inside (what inference ran before);
- folded, fused: gcm_lasagne.inference, each convolution with W * s
  adding the bias and applying the ReLU to each image's output as it ends
  (gcm_lasagne.convfuse; what inference runs now);
- folded, BiasAdd: the same without gcm_convfuse, a fastbn.BiasAdd op
  with the ReLU inside after each convolution;
- folded, Theano elemwise: the same fold with Theano's own fused
  bias + ReLU elementwise op instead of BiasAdd (why BiasAdd exists);
- convs only: the fold without its bias-and-ReLU pass. Wrong numbers:
  the bound on what adding the bias and applying the ReLU inside the
  convolution could give.
Printed: median images/s over --repeats rounds, the range, and the median
over rounds of each function's ratio to the unfolded one in the same round
(drift touches both alike), with the CPU, the date and the load.
"""
import argparse
import datetime
import json
import os
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import gcm_lasagne  # noqa: E402,F401  (configures Theano)
import lasagne  # noqa: E402
import theano  # noqa: E402
import theano.tensor as T  # noqa: E402

from gcm_lasagne import fastbn, inference  # noqa: E402
from gcm_lasagne.models import build_model  # noqa: E402
from machine import cpu_name  # noqa: E402

VARIANTS = ('unfolded', 'folded, fused', 'folded, BiasAdd',
            'folded, Theano elemwise', 'convs only')
# each variant compiled with the default mode except
MODES = {'folded, BiasAdd': theano.compile.get_default_mode().excluding(
    'gcm_convfuse')}


def _outputs(net, variant):
    """The probabilities' expression of one variant."""
    if variant == 'unfolded':
        return lasagne.layers.get_output(net['prob'], deterministic=True)
    if variant in ('folded, fused', 'folded, BiasAdd'):
        return inference.get_output(net['prob'])
    # fastbn's functions are looked up when the graph is built: bias_add by
    # inference._folded, with_rectify by the ReLU layer after a BN
    saved = fastbn.bias_add, fastbn.with_rectify
    if variant == 'convs only':
        fastbn.bias_add = lambda x, b: x
        fastbn.with_rectify = lambda y: y  # "fused": no ReLU either
    else:  # Theano's elementwise op for the bias and the ReLU
        fastbn.bias_add = lambda x, b: x + b.dimshuffle('x', 0, 'x', 'x')
    try:
        return inference.get_output(net['prob'])
    finally:
        fastbn.bias_add, fastbn.with_rectify = saved


def measure(model, args):
    x = T.tensor4('x')
    shape = (3, args.size, args.size)
    net = build_model(model, 10, shape, input_var=x)
    fns = {v: theano.function([x], _outputs(net, v), mode=MODES.get(v))
           for v in VARIANTS}
    fused = [sum(type(n.op).__module__ == 'gcm_lasagne.convfuse'
                 for n in fns[v].maker.fgraph.apply_nodes)
             for v in ('folded, fused', 'folded, BiasAdd')]
    assert fused[0] > 0 and fused[1] == 0, fused
    X = np.random.RandomState(0).uniform(
        0, 1, (args.batch,) + shape).astype('float32')
    reference = fns['unfolded'](X)
    for v in VARIANTS[1:4]:  # the exact ones: same numbers
        np.testing.assert_allclose(fns[v](X), reference, rtol=1e-4,
                                   atol=1e-6)
    for fn in fns.values():  # warm-up: allocations, OpenMP threads
        fn(X)
        fn(X)
    rates = {v: [] for v in VARIANTS}
    load = [os.getloadavg()[0]]
    for _ in range(args.repeats):
        for v in VARIANTS:
            t0 = time.perf_counter()
            for _ in range(args.batches):
                fns[v](X)
            rates[v].append(args.batch * args.batches
                            / (time.perf_counter() - t0))
    load.append(os.getloadavg()[0])
    rows = {}
    for v in VARIANTS:
        ratios = [a / b for a, b in zip(rates[v], rates['unfolded'])]
        rows[v] = {'images_per_s': rates[v],
                   'median': statistics.median(rates[v]),
                   'min': min(rates[v]), 'max': max(rates[v]),
                   'x_unfolded': statistics.median(ratios)}
    return {'model': model, 'variants': rows, 'load': load}


def markdown(results, args, started):
    lines = ['%s UTC, %s; batch %d, %dx%d, %d rounds of %d calls each; '
             'Theano openmp=%s' % (
                 started, cpu_name(), args.batch, args.size, args.size,
                 args.repeats, args.batches, theano.config.openmp), '',
             '| model | inference | images/s, median | range | '
             'x unfolded (median of rounds) |', '|---|---|---:|---:|---:|']
    for r in results:
        for v, row in r['variants'].items():
            lines.append('| %s | %s | %.0f | %.0f-%.0f | %.3f |' % (
                r['model'], v, row['median'], row['min'], row['max'],
                row['x_unfolded']))
    lines.append('')
    lines.append('Load average (1 min) before/after each model: ' + ', '.join(
        '%s %.2f/%.2f' % (r['model'], r['load'][0], r['load'][1])
        for r in results))
    return '\n'.join(lines)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--models', default='gcm,cnn')
    p.add_argument('--repeats', type=int, default=7)
    p.add_argument('--batches', type=int, default=10)
    p.add_argument('--batch', type=int, default=128)
    p.add_argument('--size', type=int, default=32)
    p.add_argument('--json', help='write every block here')
    p.add_argument('--quick', action='store_true',
                   help='tiny sizes, for the smoke test: numbers mean '
                        'nothing')
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.batches, args.batch, args.size = 2, 2, 4, 8
    return args


def main(argv=None):
    args = parse(argv)
    started = datetime.datetime.utcnow().strftime('%Y-%m-%d %H:%M')
    results = []
    for model in args.models.split(','):
        print('measuring %s' % model, file=sys.stderr, flush=True)
        results.append(measure(model, args))
    print(markdown(results, args, started))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'started': started, 'cpu': cpu_name(),
                       'args': vars(args), 'results': results}, f, indent=1)


if __name__ == '__main__':
    main()
