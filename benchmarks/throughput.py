#!/usr/bin/env python
"""How fast GCM, clipped GCM and the CNN baseline
train and infer with the Theano this package configures.

    .venv/bin/python benchmarks/throughput.py                # full run, ~10 min
    .venv/bin/python benchmarks/throughput.py --json out.json
    .venv/bin/python benchmarks/throughput.py --quick        # smoke test, ~1 min
    .venv/bin/python benchmarks/throughput.py --profile gcm  # op-by-op profile

Run it from the repository root on an idle machine: it records the load
average (/proc/loadavg) before and after every measurement, and a load
above the number of cores means the numbers are not clean.

Every measurement runs in a fresh subprocess (so each model has its own
ru_maxrss and Theano configuration), started with this script's
`--worker` option. Whatever THEANO_FLAGS / THEANORC the caller sets is
passed on, so one can compare settings:

    THEANO_FLAGS=openmp=False .venv/bin/python benchmarks/throughput.py

What is measured, per model (batch 128, float32, 3x32x32, 10 classes):
- train: images/s of the training step of gcm_lasagne.train (forward,
  backward, momentum update; non-deterministic BN), median of --repeats
  blocks of --batches steps each, after two warm-up steps;
- infer: images/s of the deterministic forward pass (class probabilities),
  as evaluation and `predict` compute it;
- each on both paths of paths.py (--paths): `winograd`, what the package
  runs now, and `direct`, what it ran before Winograd and the folded,
  fused inference graph; their timed blocks alternate;
- compile: seconds to compile the training function (and, separately, the
  inference function) from a filled compile cache, and from an empty one
  (a fresh temporary `base_compiledir`); `first step`: seconds from the
  start of the process to the end of the first training step (filled cache);
- peak memory: ru_maxrss of the measuring process;
- GFLOP/s: an analytic count of Table 1's multiply-adds (every conv,
  transposed conv, dense layer and the CCM product; BN, ReLU, softmax not
  counted; 1 multiply-add = 2 FLOP; training = 3x forward) times images/s,
  next to this machine's float32 matrix-multiply rate (numpy's sgemm and
  Theano's Dot22 with the BLAS Theano links), measured in the same run.
Also: the GCM/CNN time ratios (Table 3's column; the paper's is 1.15 on a
GPU) and the data pipeline's images/s (gcm_lasagne.batches: augmentation +
batching + conversion to float, as the training loop does).
"""
import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from machine import processor
from paths import PATHS, environment, inference_output

T_START = time.time()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = ('gcm', 'gcm-clip', 'cnn')


def loadavg():
    try:
        with open('/proc/loadavg') as f:
            return [float(v) for v in f.read().split()[:3]]
    except OSError:
        return None


def median(values):
    return statistics.median(values) if values else None


# --------------------------------------------------------------- workers
# Each worker imports Theano (through gcm_lasagne) and prints one JSON line.

def _theano_setup():
    sys.path.insert(0, ROOT)
    import gcm_lasagne  # noqa: F401  (configures Theano)
    import theano
    c = theano.config
    return {'malloc keeps freed memory': gcm_lasagne.compat.MALLOC_TUNED,
            'blas.ldflags': c.blas.ldflags, 'openmp': c.openmp,
            'openmp_elemwise_minsize': c.openmp_elemwise_minsize,
            'floatX': c.floatX, 'linker': c.linker, 'allow_gc': c.allow_gc,
            'optimizer': c.optimizer, 'cxx': bool(c.cxx),
            'base_compiledir': c.base_compiledir,
            'OMP_NUM_THREADS': os.environ.get('OMP_NUM_THREADS'),
            'OPENBLAS_NUM_THREADS': os.environ.get('OPENBLAS_NUM_THREADS')}


def _graph_report(fn):
    """What the compiled graph really does: op counts by class, float64
    variables, legacy ConvOp nodes."""
    from theano.tensor.nnet.conv import ConvOp
    nodes = fn.maker.fgraph.toposort()
    ops = {}
    for node in nodes:
        name = type(node.op).__name__
        ops[name] = ops.get(name, 0) + 1
    float64 = [str(v) for v in fn.maker.fgraph.variables
               if getattr(v.type, 'dtype', None) == 'float64']
    return {'nodes': len(nodes), 'ops': ops, 'float64_variables': float64,
            'legacy_convop': sum(isinstance(n.op, ConvOp) for n in nodes),
            'fastconv': sum(n for k, n in ops.items()
                            if k.startswith('FastCorrMM')),
            'corrmm': sum(n for k, n in ops.items() if k.startswith('CorrMM'))}


def count_multiply_adds(net):
    """Multiply-adds of one image's forward pass, layer by layer (Table 1):
    conv: output pixels x output channels x input channels x filter area;
    transposed conv: input pixels x input channels x output channels x
    filter area; dense: inputs x outputs; the CCM: one multiply (and one add
    of the mean) per element."""
    import numpy as np
    import lasagne
    from gcm_lasagne.compat import TransposedConv2DLayer
    from gcm_lasagne.layers import ClassContributionMapLayer
    total, per_layer = 0, {}
    for layer in lasagne.layers.get_all_layers(net['prob']):
        out = layer.output_shape
        if isinstance(layer, TransposedConv2DLayer):
            inp = layer.input_shape
            n = (int(np.prod(inp[1:])) * layer.num_filters
                 * int(np.prod(layer.filter_size)))
        elif isinstance(layer, lasagne.layers.Conv2DLayer):
            n = (int(np.prod(out[1:])) * layer.input_shape[1]
                 * int(np.prod(layer.filter_size)))
        elif isinstance(layer, lasagne.layers.DenseLayer):
            n = int(np.prod(layer.input_shape[1:])) * layer.num_units
        elif isinstance(layer, ClassContributionMapLayer):
            n = int(np.prod(out[1:]))
        else:
            continue
        per_layer[layer.name] = n
        total += n
    return total, per_layer


def _compile_path(path, net, model, x, profile):
    """The training step exactly as training compiles it, and the inference
    function, as `path` computes them (paths.py; the ops read GCM_WINOGRAD
    when they are compiled)."""
    import theano
    from gcm_lasagne.train import compile_train, default_config
    os.environ.update(environment(path))
    t0 = time.time()
    train_fn = compile_train(net, default_config(model=model), profile)[0]
    compile_train_s = time.time() - t0
    t0 = time.time()
    infer_fn = theano.function([x], inference_output(net, path),
                               profile=profile)
    return train_fn, infer_fn, compile_train_s, time.time() - t0


def worker_model(args):
    """Compile and time one model on each of args.paths, their timed blocks
    alternating (this machine's speed drifts); with --compile-only just
    compile the first path."""
    config = _theano_setup()
    import numpy as np
    import theano
    import theano.tensor as T
    from gcm_lasagne.models import build_model
    floatX = theano.config.floatX
    t_import = time.time() - T_START

    shape = (3, args.size, args.size)
    x = T.tensor4('x')
    net = build_model(args.model, num_classes=10, input_shape=shape,
                      input_var=x)
    profile = bool(args.profile)
    rng = np.random.RandomState(0)
    X = rng.uniform(0, 1, (args.batch,) + shape).astype(floatX)
    Y = rng.randint(0, 10, args.batch).astype('int32')
    paths = args.paths.split(',')
    if args.compile_only:
        _, _, compile_train_s, compile_infer_s = _compile_path(
            paths[0], net, args.model, x, profile)
        print(json.dumps({'compile_train_s': compile_train_s,
                          'compile_infer_s': compile_infer_s,
                          'config': config}))
        return
    fns, out = {}, {}
    for path in paths:
        train_fn, infer_fn, compile_train_s, compile_infer_s = _compile_path(
            path, net, args.model, x, profile)
        train_fn(X, Y)
        fns[path] = (train_fn, infer_fn)
        out[path] = {'compile_train_s': compile_train_s,
                     'compile_infer_s': compile_infer_s,
                     'first_step_s': time.time() - T_START,
                     'train_img_s': [], 'infer_img_s': [],
                     'train_graph': _graph_report(train_fn),
                     'infer_graph': _graph_report(infer_fn)}

    def block(step):
        t0 = time.time()
        for _ in range(args.batches):
            step()
        return args.batch * args.batches / (time.time() - t0)

    load_before = loadavg()
    for kind, call in (('train', lambda f: f[0](X, Y)),
                       ('infer', lambda f: f[1](X))):
        for path in paths:  # warm-up: allocations, OpenMP thread start
            call(fns[path])
            call(fns[path])
        for _ in range(args.repeats):
            for path in paths:
                out[path][kind + '_img_s'].append(
                    block(lambda: call(fns[path])))
    mads, per_layer = count_multiply_adds(net)
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.
    for path in paths:
        out[path].update({
            'model': args.model, 'path': path, 'config': config,
            'import_s': t_import, 'forward_multiply_adds': mads,
            'multiply_adds_per_layer': per_layer, 'maxrss_mb': maxrss,
            'load_before': load_before, 'load_after': loadavg()})
        if profile:
            import io
            for name, fn in zip(('train', 'infer'), fns[path]):
                buf = io.StringIO()
                fn.profile.summary(file=buf, n_ops_to_print=25,
                                   n_apply_to_print=25)
                out[path]['profile_' + name] = buf.getvalue()
    # the first path's compile came first: the others reused its cache
    first_step = out[paths[0]]['first_step_s']
    for path in paths[1:]:
        out[path]['first_step_s'] = None
        out[path]['compile_train_s'] = out[path]['compile_infer_s'] = None
    out[paths[0]]['first_step_s'] = first_step
    print(json.dumps({'paths': out}))


def worker_gemm(args):
    """float32 matrix-multiply rate: numpy's sgemm and Theano's Dot22
    (the BLAS Theano links): this machine's reference rate. The convolutions
    (gcm_lasagne.fastconv) do not call BLAS."""
    config = _theano_setup()
    import numpy as np
    import theano
    import theano.tensor as T
    n = args.gemm_size
    rng = np.random.RandomState(0)
    a = rng.uniform(-1, 1, (n, n)).astype('float32')
    b = rng.uniform(-1, 1, (n, n)).astype('float32')
    A, B = T.fmatrix('a'), T.fmatrix('b')
    dot = theano.function([A, B], T.dot(A, B))
    ops = [type(node.op).__name__ for node in dot.maker.fgraph.toposort()]

    def gflops(step):
        step()
        times = []
        for _ in range(args.repeats):
            t0 = time.time()
            for _ in range(args.gemm_reps):
                step()
            times.append(2. * n ** 3 * args.gemm_reps / (time.time() - t0)
                         / 1e9)
        return times

    load_before = loadavg()
    print(json.dumps({'config': config, 'size': n, 'theano_ops': ops,
                      'numpy_gflops': gflops(lambda: np.dot(a, b)),
                      'theano_gflops': gflops(lambda: dot(a, b)),
                      'load_before': load_before, 'load_after': loadavg()}))


def worker_data(args):
    """The data pipeline of the training loop on synthetic uint8 images."""
    sys.path.insert(0, ROOT)
    import numpy as np
    try:
        from gcm_lasagne import batches
    except ImportError as e:
        print(json.dumps({'error': 'gcm_lasagne.batches: %s' % e}))
        return
    rng = np.random.RandomState(0)
    n = args.data_images
    X = rng.randint(0, 256, (n, 3, args.size, args.size)).astype('uint8')
    y = rng.randint(0, 10, n).astype('int32')

    def augment(Xb):
        return batches.augment(Xb, rng, pad=4, flip=True)

    rates = []
    load_before = loadavg()
    for _ in range(args.repeats):
        t0, seen = time.time(), 0
        for Xb, yb in batches.iterate_minibatches(X, y, args.batch,
                                                  shuffle=True, rng=rng,
                                                  augment_fn=augment):
            Xb = batches.to_float(Xb)
            seen += len(yb)
        rates.append(seen / (time.time() - t0))
    print(json.dumps({'img_s': rates, 'images': n, 'load_before': load_before,
                      'load_after': loadavg()}))


# ------------------------------------------------------------ the driver

def run_worker(kind, args, extra=(), env=None, echo=None):
    cmd = [sys.executable, os.path.abspath(__file__), '--worker', kind,
           '--batch', str(args.batch), '--batches', str(args.batches),
           '--repeats', str(args.repeats), '--size', str(args.size),
           '--gemm-size', str(args.gemm_size),
           '--gemm-reps', str(args.gemm_reps),
           '--data-images', str(args.data_images),
           '--paths', ','.join(args.paths)] + list(extra)
    if echo:
        echo('  running: %s %s' % (kind, ' '.join(extra)))
    load = loadavg()
    child = subprocess.run(cmd, cwd=ROOT, env=env or os.environ.copy(),
                           capture_output=True, text=True)
    if child.returncode != 0:
        raise RuntimeError('worker %s %s failed:\n%s' % (
            kind, ' '.join(extra), child.stderr[-3000:]))
    result = json.loads(child.stdout.strip().splitlines()[-1])
    result.setdefault('load_before', load)
    return result


def cold_env(tmp):
    """The caller's environment with an empty compile cache: Theano reads
    base_compiledir from THEANO_FLAGS (the last value wins)."""
    env = os.environ.copy()
    flags = env.get('THEANO_FLAGS', '')
    env['THEANO_FLAGS'] = ','.join(
        f for f in (flags, 'base_compiledir=' + tmp) if f)
    return env


def measure(args, echo=print):
    result = {'argv': sys.argv[1:], 'quick': args.quick,
              'machine': {'cpus': os.cpu_count(),
                          'processor': processor(),
                          'python': platform.python_version(),
                          'env': {k: os.environ.get(k) for k in (
                              'THEANO_FLAGS', 'THEANORC', 'OMP_NUM_THREADS',
                              'OPENBLAS_NUM_THREADS')}},
              'load_start': loadavg(), 'models': {}}
    echo('load average at start: %s' % result['load_start'])
    result['gemm'] = run_worker('gemm', args, echo=echo)
    for model in args.models:
        entry = {}
        if not args.quick:
            # fill the default cache, so that the next run is "filled"
            run_worker('model', args, ['--model', model, '--compile-only'],
                       echo=echo)
        by_path = run_worker('model', args, ['--model', model] + (
            ['--profile', '1'] if args.profile and model in args.profile else []),
            echo=echo)['paths']
        for path in args.paths[1:]:  # their own columns, named by path
            result['models']['%s, %s' % (model, path)] = by_path[path]
        entry.update(by_path[args.paths[0]])
        if not args.quick:
            tmp = tempfile.mkdtemp(prefix='gcm-bench-cold-')
            try:
                cold = run_worker('model', args,
                                  ['--model', model, '--compile-only'],
                                  env=cold_env(tmp), echo=echo)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            entry['cold_compile_train_s'] = cold['compile_train_s']
            entry['cold_compile_infer_s'] = cold['compile_infer_s']
            entry['cold_load_before'] = cold['load_before']
        result['models'][model] = entry
    result['models'] = dict(sorted(result['models'].items(),
                                   key=lambda item: _column(item[0], args)))
    result['data'] = run_worker('data', args, echo=echo)
    result['load_end'] = loadavg()
    summarise(result)
    return result


def _column(name, args):
    """Columns in the order of --models, each model's paths together."""
    model, _, path = name.partition(', ')
    return (args.models.index(model),
            args.paths.index(path) if path else 0)


def summarise(result):
    """Medians, GFLOP/s and the ratios, added to `result`."""
    from gcm_lasagne.paper import TABLE3  # plain data, no Theano import
    gemm = result['gemm']
    gemm['numpy_gflops_median'] = median(gemm['numpy_gflops'])
    gemm['theano_gflops_median'] = median(gemm['theano_gflops'])
    for entry in result['models'].values():
        entry['train_img_s_median'] = median(entry['train_img_s'])
        entry['infer_img_s_median'] = median(entry['infer_img_s'])
        flop = 2. * entry['forward_multiply_adds']
        entry['train_gflops'] = 3 * flop * entry['train_img_s_median'] / 1e9
        entry['infer_gflops'] = flop * entry['infer_img_s_median'] / 1e9
    models = result['models']
    for name, entry in models.items():
        direct = models.get(name + ', direct')
        if direct:
            for kind in ('train', 'infer'):
                # the ratio of each alternating pair of blocks, median
                entry[kind + '_x_direct'] = median([
                    a / b for a, b in zip(entry[kind + '_img_s'],
                                          direct[kind + '_img_s'])])
    if 'gcm' in models and 'cnn' in models:
        # time per image, GCM over CNN
        result['ratio'] = {
            'train': models['cnn']['train_img_s_median']
            / models['gcm']['train_img_s_median'],
            'infer': models['cnn']['infer_img_s_median']
            / models['gcm']['infer_img_s_median'],
            'paper': TABLE3['gcm']['time_ratio']}
    data = result['data']
    if 'img_s' in data:
        data['img_s_median'] = median(data['img_s'])
        if 'gcm' in models:
            data['x_gcm_training'] = (data['img_s_median']
                                      / models['gcm']['train_img_s_median'])


def _fmt(value, digits=0):
    if value is None:
        return '-'
    return '%.*f' % (digits, value)


def markdown(result):
    g = result['gemm']
    m = result['models']
    cfg = g['config']
    lines = [
        '| | %s |' % ' | '.join(m),
        '|---|%s' % ('---:|' * len(m)),
    ]

    def row(label, key, digits=0, source=None):
        lines.append('| %s | %s |' % (label, ' | '.join(
            _fmt((source or (lambda e: e.get(key)))(e), digits)
            for e in m.values())))

    row('training, images/s (median)', 'train_img_s_median')
    row('inference, images/s (median)', 'infer_img_s_median')
    row('training, x the direct path (alternating blocks)',
        'train_x_direct', 2)
    row('inference, x the direct path (alternating blocks)',
        'infer_x_direct', 2)
    row('training, effective GFLOP/s (direct arithmetic / time)',
        'train_gflops', 1)
    row('inference, effective GFLOP/s (direct arithmetic / time)',
        'infer_gflops', 1)
    row('forward multiply-adds per image (M)', None, 1,
        lambda e: e['forward_multiply_adds'] / 1e6)
    row('compile training fn, filled cache (s)', 'compile_train_s', 1)
    row('compile inference fn, filled cache (s)', 'compile_infer_s', 1)
    row('process start to first training step, filled cache (s)',
        'first_step_s', 1)
    row('compile training fn, empty cache (s)', 'cold_compile_train_s', 1)
    row('compile inference fn, empty cache (s)', 'cold_compile_infer_s', 1)
    row('peak memory, ru_maxrss (MB)', 'maxrss_mb')
    row('convolution ops in the training graph: ours (FastCorrMM*)', None, 0,
        lambda e: e['train_graph']['fastconv'])
    row("convolution ops in the training graph: Theano's CorrMM*", None, 0,
        lambda e: e['train_graph']['corrmm'])
    row('float64 variables / legacy ConvOp in the training graph', None, 0,
        lambda e: len(e['train_graph']['float64_variables'])
        + e['train_graph']['legacy_convop'])
    row('load average (1 min) before timing', None, 2,
        lambda e: (e.get('load_before') or [None])[0])
    lines.append('')
    lines.append('| measure | value |')
    lines.append('|---|---:|')
    if 'ratio' in result:
        r = result['ratio']
        lines.append('| GCM/CNN time ratio, training (paper, GPU: %s) | %.2f |'
                     % (r['paper'], r['train']))
        lines.append('| GCM/CNN time ratio, inference (paper, GPU: %s) | %.2f |'
                     % (r['paper'], r['infer']))
    d = result['data']
    if 'img_s_median' in d:
        lines.append('| data pipeline (augment + batch + to float), images/s '
                     '| %.0f |' % d['img_s_median'])
        if 'x_gcm_training' in d:
            lines.append('| data pipeline / GCM training speed | %.1fx |'
                         % d['x_gcm_training'])
    else:
        lines.append('| data pipeline | %s |' % d.get('error', '-'))
    threads = cfg.get('OPENBLAS_NUM_THREADS') or 'default'
    lines.append('| float32 matmul %dx%d, numpy, OPENBLAS_NUM_THREADS=%s '
                 '(GFLOP/s) | %.1f |' % (g['size'], g['size'], threads,
                                         g['numpy_gflops_median']))
    lines.append('| float32 matmul %dx%d, Theano %s, same threads (GFLOP/s) '
                 '| %.1f |' % (g['size'], g['size'],
                               '/'.join(g['theano_ops']),
                               g['theano_gflops_median']))
    lines.append('')
    lines.append('Theano: blas.ldflags=%r, openmp=%s, linker=%s, allow_gc=%s, '
                 'floatX=%s, malloc keeps freed memory: %s. In the '
                 'workers: OMP_NUM_THREADS=%s, OPENBLAS_NUM_THREADS=%s. '
                 'CPU: %s x %s. Load average start %s, end %s.' % (
                     cfg['blas.ldflags'], cfg['openmp'], cfg['linker'],
                     cfg['allow_gc'], cfg['floatX'],
                     cfg['malloc keeps freed memory'],
                     cfg['OMP_NUM_THREADS'], cfg['OPENBLAS_NUM_THREADS'],
                     result['machine']['cpus'],
                     result['machine']['processor'],
                     result['load_start'], result['load_end']))
    return '\n'.join(lines)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--json', metavar='PATH', help='also write the results '
                   'as JSON (with every repeat, the graph op counts and the '
                   'per-layer multiply-adds)')
    p.add_argument('--quick', action='store_true', help='tiny sizes, a '
                   'couple of batches, no cold-compile measurement (the '
                   'test suite runs this)')
    p.add_argument('--models', default=','.join(MODELS),
                   help='comma-separated, from %s' % ', '.join(MODELS))
    p.add_argument('--batch', type=int, default=128)
    p.add_argument('--batches', type=int, default=10,
                   help='steps per timed block')
    p.add_argument('--repeats', type=int, default=5,
                   help='timed blocks; the median is reported')
    p.add_argument('--size', type=int, default=32, help='image rows = cols')
    p.add_argument('--profile', default='', help='comma-separated models to '
                   'run with Theano profile=True (printed after the table)')
    p.add_argument('--paths', default=','.join(PATHS),
                   help='comma-separated, from %s: each model is compiled '
                   'with Winograd on (GCM_WINOGRAD=1) and off, the first '
                   'in the model\'s column, the others beside it, timed in '
                   'alternating blocks' % ', '.join(PATHS))
    p.add_argument('--gemm-size', type=int, default=1024)
    p.add_argument('--gemm-reps', type=int, default=10)
    p.add_argument('--data-images', type=int, default=10000)
    # internal
    p.add_argument('--worker', choices=('model', 'gemm', 'data'),
                   help=argparse.SUPPRESS)
    p.add_argument('--model', help=argparse.SUPPRESS)
    p.add_argument('--compile-only', action='store_true',
                   help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        args.profile = bool(args.profile)
        return args
    args.paths = [s for s in args.paths.split(',') if s]
    if not args.paths or set(args.paths) - set(PATHS):
        p.error('--paths: comma-separated, from %s' % ', '.join(PATHS))
    args.models = [s for s in args.models.split(',') if s]
    args.profile = [s for s in args.profile.split(',') if s]
    if args.quick:
        args.batch, args.batches, args.repeats = 8, 2, 2
        args.size, args.gemm_size, args.gemm_reps = 8, 128, 2
        args.data_images = 256
    return args


def main(argv=None):
    args = parse(argv)
    if args.worker:
        {'model': worker_model, 'gemm': worker_gemm,
         'data': worker_data}[args.worker](args)
        return
    sys.path.insert(0, ROOT)
    echo = (lambda s: print(s, file=sys.stderr))
    result = measure(args, echo)
    print(markdown(result))
    for column, entry in result['models'].items():
        for name in ('train', 'infer'):
            if 'profile_' + name in entry:
                print('\n## Theano profile: %s, %s\n' % (column, name))
                print(entry['profile_' + name])
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=1, sort_keys=True)


if __name__ == '__main__':
    main()
