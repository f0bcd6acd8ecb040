#!/usr/bin/env python
"""This project's GCM and CNN (Theano) against PyTorch CPU builds of the same
networks, timed alternately on the same machine (issue 27's comparison).

    .venv/bin/python benchmarks/torch_compare.py --torch-python VENV/bin/python
    .venv/bin/python benchmarks/torch_compare.py --paths winograd,direct
    .venv/bin/python benchmarks/torch_compare.py --check     # same outputs?

PyTorch is never a dependency of the project: it lives in a scratch venv of
its own, e.g. made from the repository root with
`python3.11 -m venv ../torch-venv && ../torch-venv/bin/pip install torch`,
and is given by --torch-python (default: $TORCH_PYTHON, else
../torch-venv/bin/python). This file runs in both interpreters: as the
driver and the Theano worker in the project's venv, as the PyTorch worker
in the scratch one, so at module level it imports the standard library only.

Each side is a long-lived worker subprocess, driven step by step over
pipes, so that blocks alternate: per repeat, per model, per kind (training,
then inference), one block of --steps steps on each of our paths
(paths.py: winograd, what the package runs now, or direct, what it ran
before), then one on PyTorch. The
ratio of each such pair is ours / PyTorch in images/s (> 1: ours faster);
the table gives the medians and the spread (min-max) of the pair ratios.

What is timed (batch 128, float32, 3x32x32, 10 classes, random data):
- training: ours is gcm_lasagne.train.compile_train's function (forward,
  backward, SGD momentum 0.9, batch norm in training mode); PyTorch's is
  zero_grad, forward, cross-entropy, backward, torch.optim.SGD(momentum=0.9)
  step, model.train();
- inference: ours is theano.function of the class probabilities 'prob' as
  the path computes them (winograd: gcm_lasagne.inference's folded graph,
  as evaluation and gcm_lasagne.api compile it); PyTorch's is
  model.eval() under torch.inference_mode(), forward to the softmax.
Both use the same number of threads (--threads, default all cores):
OMP_NUM_THREADS for both workers and torch.set_num_threads.

The PyTorch networks are built from gcm_lasagne/paper.py's Table 1 rows
(loaded by path: plain data, no Theano), layer for layer; their trainable
parameter counts must equal ours and paper.PARAMS or nothing is timed.
PyTorch's GCM draws the 5-D CCM (CWM times image) and takes its mean, as
eq. 3 reads; ours gets the same mean without the 5-D array (layers.py).
--check goes further: it copies our (randomised) weights and batch-norm
statistics into the PyTorch networks and compares both outputs, training-
and inference-mode; without PyTorch it prints why it skipped and exits 0.
"""
import argparse
import base64
import collections
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

from machine import processor
from paths import PATHS, environment, inference_output, path_of

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = ('gcm', 'cnn')
CHECK_TOLERANCE = 1e-4          # max |difference| of class probabilities


def default_torch_python():
    return os.environ.get('TORCH_PYTHON') or os.path.join(
        os.path.dirname(ROOT), 'torch-venv', 'bin', 'python')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--torch-python', default=default_torch_python(),
                   help='the Python of the venv that has torch (default: '
                        '$TORCH_PYTHON, else ../torch-venv/bin/python)')
    p.add_argument('--models', default=','.join(MODELS))
    p.add_argument('--paths', default='winograd',
                   help='our convolution paths to time: winograd, direct '
                        "or both, comma-separated (paths.py)")
    p.add_argument('--repeats', type=int, default=7)
    p.add_argument('--steps', type=int, default=10, help='steps per block')
    p.add_argument('--batch', type=int, default=128)
    p.add_argument('--size', type=int, default=32, help='image rows/cols')
    p.add_argument('--threads', type=int, default=os.cpu_count())
    p.add_argument('--check', action='store_true',
                   help='compare outputs with shared weights; no timing')
    p.add_argument('--worker', choices=('theano', 'torch'),
                   help=argparse.SUPPRESS)
    p.add_argument('--model', help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.models = _names(p, '--models', args.models, MODELS)
    args.paths = _names(p, '--paths', args.paths, PATHS)
    for name in ('repeats', 'steps', 'batch', 'threads'):
        if getattr(args, name) < 1:
            p.error('--%s must be at least 1' % name)
    if args.size < 4 or args.size % 4:
        p.error('--size must be a positive multiple of 4 (two stride-2 '
                'stages)')
    return args


def _names(parser, option, text, allowed):
    names = [n for n in text.split(',') if n]
    bad = [n for n in names if n not in allowed]
    if bad or not names or len(set(names)) != len(names):
        parser.error('%s %s: a comma-separated list of distinct names '
                     'from %s' % (option, text, ', '.join(allowed)))
    return names


def b64(raw):
    return base64.b64encode(raw).decode('ascii')


# ------------------------------------------------------------ the workers
# Protocol: one JSON object a line each way. The worker's first line says
# it is ready (after compiling and two warm-up calls of each function);
# then each request {"kind": "train"|"infer", "steps": N} is answered with
# {"seconds": ...}, timed inside the worker so the pipe is not counted.

def _protocol_out():
    """Theano and PyTorch may print to stdout: keep the real stdout for
    the protocol and send fd 1 to stderr, before either is imported."""
    global PROTOCOL
    PROTOCOL = os.fdopen(os.dup(1), 'w')
    os.dup2(2, 1)


def _serve(ready, calls):
    def send(obj):
        PROTOCOL.write(json.dumps(obj) + '\n')
        PROTOCOL.flush()
    send(ready)
    for line in sys.stdin:
        request = json.loads(line)
        if 'kind' in request:
            call = calls[request['kind']]
            t0 = time.perf_counter()
            for _ in range(request['steps']):
                call()
            send({'seconds': time.perf_counter() - t0})
        else:
            send(calls['check'](request))


def theano_worker(args):
    sys.path.insert(0, ROOT)
    import gcm_lasagne  # noqa: F401  (configures Theano)
    import lasagne
    import numpy as np
    import theano
    import theano.tensor as T
    from gcm_lasagne import paper
    from gcm_lasagne.models import build_model
    from gcm_lasagne.train import compile_train, default_config

    lasagne.random.set_rng(np.random.RandomState(0))  # same weights each run
    x = T.tensor4('x')
    net = build_model(args.model, 10, (3, args.size, args.size), input_var=x)
    rng = np.random.RandomState(0)
    X = rng.uniform(0, 1, (args.batch, 3, args.size, args.size)).astype(
        theano.config.floatX)
    Y = rng.randint(0, 10, args.batch).astype('int32')
    info = {'params': int(lasagne.layers.count_params(net['prob'],
                                                      trainable=True)),
            'paper_params': paper.PARAMS[args.model],
            'GCM_WINOGRAD': os.environ.get('GCM_WINOGRAD'),
            'versions': {'theano': theano.__version__,
                         'lasagne': lasagne.__version__,
                         'numpy': np.__version__,
                         'python': platform.python_version()}}
    if args.check:
        # both modes in one call; no_default_updates: the training-mode
        # output must not move the running statistics the other one reads
        outputs = [lasagne.layers.get_output(net['prob'], deterministic=d)
                   for d in (False, True)]
        forward = theano.function([x], outputs, no_default_updates=True)
        params = lasagne.layers.get_all_params(net['prob'])
        for p in params:  # so that a wrong mapping cannot pass unseen
            value = p.get_value()
            if p.name.endswith(('.gamma', '.inv_std')):
                value = rng.uniform(0.5, 1.5, value.shape)
            elif p.name.endswith(('.beta', '.mean')):
                value = rng.normal(0, 0.2, value.shape)
            elif p.name.endswith('.pixel_mean'):
                value = rng.uniform(0, 1, value.shape)
            p.set_value(value.astype(p.dtype))

        def check(request):
            train_prob, eval_prob = forward(X)
            return {'x': b64(X.tobytes()), 'shape': X.shape,
                    'params': [[p.name, p.get_value().shape,
                                b64(p.get_value().astype('<f4').tobytes())]
                               for p in params],
                    'train': train_prob.tolist(), 'eval': eval_prob.tolist()}
        _serve(info, {'check': check})
        return
    train_fn = compile_train(net, default_config(model=args.model))[0]
    infer_fn = theano.function([x], inference_output(net,
                                                     path_of(os.environ)))
    calls = {'train': lambda: train_fn(X, Y), 'infer': lambda: infer_fn(X)}
    for call in calls.values():  # allocations, OpenMP threads
        call()
        call()
    _serve(info, calls)


def load_paper():
    """gcm_lasagne/paper.py by path: the package itself imports Theano,
    which the PyTorch venv does not have."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'paper', os.path.join(ROOT, 'gcm_lasagne', 'paper.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def torch_network(torch, model, size, classes=10):
    """Table 1 in PyTorch, its modules named as our Lasagne layers (conv1,
    conv1_bn, ...), so --check can copy our weights by name."""
    nn = torch.nn
    paper = load_paper()

    def stack(rows, channels):
        layers = []
        for number, kind, f, c, s in rows:
            name = '%s%d' % (kind, number)
            # 'same': pad f // 2 (odd f); no bias, BN follows
            if kind == 'conv':
                conv = nn.Conv2d(channels, c, f, s, padding=f // 2,
                                 bias=False)
            else:
                # Lasagne's crop='same' with output_size = stride x input:
                # cropping f // 2 and adding stride - 1 gives that size and
                # the same alignment
                conv = nn.ConvTranspose2d(channels, c, f, s, padding=f // 2,
                                          output_padding=s - 1, bias=False)
            # Lasagne's batch_norm(): epsilon 1e-4, running averages alpha 0.1
            layers += [(name, conv),
                       (name + '_bn', nn.BatchNorm2d(c, eps=1e-4,
                                                     momentum=0.1)),
                       (name + '_relu', nn.ReLU(inplace=True))]
            channels = c
        return layers, channels

    class GCM(nn.Module):
        def __init__(self):
            super().__init__()
            layers, channels = stack(paper.ENCODER + paper.DECODER, 3)
            self.body = nn.Sequential(collections.OrderedDict(layers))
            number, _, f, _, _ = paper.CLASS_LAYER
            # layer 15: N per-class 5x5 convolutions as one N-channel one
            # (as ours), with bias, no BN, no nonlinearity
            self.conv15 = nn.Conv2d(channels, classes, f, padding=f // 2)

        def forward(self, image):
            cwm = self.conv15(self.body(image))         # (B, N, R, C)
            ccm = cwm.unsqueeze(2) * image.unsqueeze(1)  # (B, N, D, R, C)
            return ccm.mean(dim=(2, 3, 4))              # class scores

    class CNN(nn.Module):
        def __init__(self):
            super().__init__()
            rows = tuple((n, k, f, c if n == 1 else int(c * paper.CNN_WIDTH),
                          s) for n, k, f, c, s in paper.ENCODER)
            self.register_buffer('pixel_mean', torch.zeros(3, size, size))
            layers, channels = stack(rows, 3)
            self.body = nn.Sequential(collections.OrderedDict(layers))
            self.class_scores = nn.Linear(channels, classes)

        def forward(self, image):
            code = self.body(image - self.pixel_mean)
            return self.class_scores(code.mean(dim=(2, 3)))  # GAP, dense

    return (GCM if model == 'gcm' else CNN)()


def load_lasagne_values(torch, net, params):
    """Our parameters into the PyTorch network, by layer name. Lasagne's
    Conv2DLayer flips its filters (a true convolution), and so does its
    TransposedConv2DLayer (the transpose of one); PyTorch correlates."""
    modules = dict(net.named_modules())
    for name, shape, data in params:
        value = torch.frombuffer(bytearray(base64.b64decode(data)),
                                 dtype=torch.float32).reshape(shape)
        layer, what = name.rsplit('.', 1)
        module = modules.get('body.' + layer, modules.get(layer))
        if what == 'pixel_mean':
            target = net.pixel_mean
        elif what == 'W' and isinstance(module, torch.nn.Linear):
            target, value = module.weight, value.t()
        elif what == 'W':
            target, value = module.weight, value.flip(2, 3)
        elif what in ('b', 'beta'):
            target = module.bias
        elif what == 'gamma':
            target = module.weight
        elif what == 'mean':
            target = module.running_mean
        elif what == 'inv_std':
            target, value = module.running_var, value ** -2 - module.eps
        if tuple(target.shape) != tuple(value.shape):
            raise ValueError('%s: ours %s, PyTorch %s' % (
                name, tuple(value.shape), tuple(target.shape)))
        with torch.no_grad():
            target.copy_(value)


def torch_worker(args):
    import warnings
    # torch warns once that this venv has no numpy; it needs none here
    warnings.filterwarnings('ignore', message='Failed to initialize NumPy')
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = torch_network(torch, args.model, args.size)
    x = torch.rand(args.batch, 3, args.size, args.size)
    y = torch.randint(0, 10, (args.batch,))
    info = {'params': sum(p.numel() for p in net.parameters()
                          if p.requires_grad),
            'threads': torch.get_num_threads(),
            'versions': {'torch': torch.__version__,
                         'cpu_capability':
                             torch.backends.cpu.get_cpu_capability(),
                         'python': platform.python_version()}}
    if args.check:
        def check(request):
            load_lasagne_values(torch, net, request['params'])
            image = torch.frombuffer(bytearray(base64.b64decode(
                request['x'])), dtype=torch.float32).reshape(request['shape'])
            out = {}
            # eval first: the training-mode pass moves the running averages
            for mode, train in (('eval', False), ('train', True)):
                net.train(train)
                with torch.no_grad():
                    out[mode] = F.softmax(net(image), 1).tolist()
            return out
        _serve(info, {'check': check})
        return
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)

    def train():
        net.train()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(x), y)  # log-softmax + NLL, batch mean
        loss.backward()
        opt.step()
        return loss.item()

    def infer():
        net.eval()
        with torch.inference_mode():
            return F.softmax(net(x), 1)

    calls = {'train': train, 'infer': infer}
    for call in calls.values():  # oneDNN primitives, allocations, threads
        call()
        call()
    _serve(info, calls)


# ------------------------------------------------------------- the driver

class Worker:
    def __init__(self, python, side, model, args, env):
        cmd = [python, os.path.abspath(__file__), '--worker', side,
               '--model', model, '--batch', str(args.batch),
               '--size', str(args.size), '--threads', str(args.threads)]
        if args.check:
            cmd.append('--check')
        self.name = '%s %s' % (side, model)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env,
                                     cwd=ROOT, text=True)
        self.info = self.read()

    def read(self):
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit('worker %s ended (status %s); see its stderr '
                             'above' % (self.name, self.proc.wait()))
        return json.loads(line)

    def ask(self, request):
        self.proc.stdin.write(json.dumps(request) + '\n')
        self.proc.stdin.flush()
        return self.read()

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def torch_version(python):
    """torch's version in that interpreter, or None and why not."""
    try:
        done = subprocess.run([python, '-c', 'import torch; '
                               'print(torch.__version__)'],
                              capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, str(e)
    if done.returncode:
        return None, (done.stderr.strip().splitlines() or ['?'])[-1]
    return done.stdout.strip(), None


def start_workers(args):
    """{(model, side): Worker}; side is a path of ours or 'torch'. Started
    one at a time, so that compiles do not overlap."""
    workers = {}
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    for model in args.models:
        paths = args.paths[:1] if args.check else args.paths
        for path in paths:
            log('compiling ours (%s), %s' % (path, model))
            workers[model, path] = Worker(
                sys.executable, 'theano', model, args,
                dict(env, **environment(path)))
        log('starting PyTorch, %s' % model)
        workers[model, 'torch'] = Worker(args.torch_python, 'torch', model,
                                         args, env)
        ours = workers[model, paths[0]].info
        theirs = workers[model, 'torch'].info['params']
        if not ours['params'] == theirs == ours['paper_params']:
            raise SystemExit('%s: trainable parameters ours %d, PyTorch %d, '
                             'paper %d: not the same network' % (
                                 model, ours['params'], theirs,
                                 ours['paper_params']))
    return workers


def check(args, workers):
    """Our weights in PyTorch's networks; both outputs compared."""
    worst = 0.
    for model in args.models:
        ours = workers[model, args.paths[0]].ask({})
        theirs = workers[model, 'torch'].ask(ours)
        for mode in ('train', 'eval'):
            diff = max(abs(a - b) for row_a, row_b in zip(ours[mode],
                                                          theirs[mode])
                       for a, b in zip(row_a, row_b))
            worst = max(worst, diff)
            # their range shows the outputs are not all about 1 / classes
            flat = [a for row in ours[mode] for a in row]
            print('%s, %s mode: class probabilities %.3f-%.3f, max |ours - '
                  'PyTorch| %.2e' % (model, 'training' if mode == 'train'
                                     else 'inference', min(flat), max(flat),
                                     diff))
    ok = worst <= CHECK_TOLERANCE
    print('same networks (tolerance %g): %s' % (CHECK_TOLERANCE,
                                                'yes' if ok else 'NO'))
    return ok


def measure(args, workers):
    """{(model, side, kind): [images/s per repeat]}, blocks alternating."""
    rates = {}
    for r in range(args.repeats):
        log('repeat %d of %d' % (r + 1, args.repeats))
        for model in args.models:
            for kind in ('train', 'infer'):
                for side in args.paths + ['torch']:
                    seconds = workers[model, side].ask(
                        {'kind': kind, 'steps': args.steps})['seconds']
                    rates.setdefault((model, side, kind), []).append(
                        args.batch * args.steps / seconds)
    return rates


def table(args, rates):
    """The Markdown table: per model and path, medians of images/s and the
    median and min-max of the per-pair ratios ours / PyTorch."""
    head = ['model', 'ours', 'training img/s, ours', 'PyTorch',
            'ours / PyTorch (min-max)', 'inference img/s, ours', 'PyTorch',
            'ours / PyTorch (min-max)']
    lines = ['| ' + ' | '.join(head) + ' |',
             '|' + '|'.join(['---'] * 2 + ['---:'] * 6) + '|']
    for model in args.models:
        for path in args.paths:
            cells = [model, path]
            for kind in ('train', 'infer'):
                ours = rates[model, path, kind]
                theirs = rates[model, 'torch', kind]
                ratios = [a / b for a, b in zip(ours, theirs)]
                cells += ['%.0f' % statistics.median(ours),
                          '%.0f' % statistics.median(theirs),
                          '%.2f (%.2f-%.2f)' % (statistics.median(ratios),
                                                min(ratios), max(ratios))]
            lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def log(text):
    print(text, file=sys.stderr, flush=True)


def loadavg():
    try:
        with open('/proc/loadavg') as f:
            return ' '.join(f.read().split()[:3])
    except OSError:
        return '?'


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        _protocol_out()
        return (theano_worker if args.worker == 'theano'
                else torch_worker)(args)
    version, why = torch_version(args.torch_python)
    if version is None:
        message = 'no PyTorch at %s (%s)' % (args.torch_python, why)
        if args.check:
            print('skipped: ' + message)
            return 0
        raise SystemExit(message + '; give --torch-python')
    load_start = loadavg()
    workers = start_workers(args)
    try:
        if args.check:
            return 0 if check(args, workers) else 1
        rates = measure(args, workers)
    finally:
        for worker in workers.values():
            worker.close()
    first = workers[args.models[0], args.paths[0]].info
    torch_info = workers[args.models[0], 'torch'].info
    print(table(args, rates))
    print()
    print('Trainable parameters, ours / PyTorch / paper: %s.' % '; '.join(
        '%s %s / %s / %s' % (m, *('{:,}'.format(n) for n in (
            workers[m, args.paths[0]].info['params'],
            workers[m, 'torch'].info['params'],
            workers[m, args.paths[0]].info['paper_params'])))
        for m in args.models))
    print('Batch %d, float32, 3x%dx%d, 10 classes; %d repeats of blocks of '
          '%d steps, ours then PyTorch; ratio = ours / PyTorch images/s, '
          'median of the pairs (min-max).' % (
              args.batch, args.size, args.size, args.repeats, args.steps))
    now = datetime.datetime.now(datetime.timezone.utc)
    print('%s, %d cores; threads: %d each (OMP_NUM_THREADS=%d for both, '
          'torch.set_num_threads(%d)); %s UTC; load average %s at the '
          'start, %s at the end.' % (
              processor(), os.cpu_count(), args.threads, args.threads,
              torch_info['threads'], now.strftime('%Y-%m-%d %H:%M'),
              load_start, loadavg()))
    v = first['versions']
    print('Ours: Python %s, Theano %s, Lasagne %s, numpy %s, paths: %s. '
          'PyTorch %s (CPU capability %s), Python %s.' % (
              v['python'], v['theano'], v['lasagne'], v['numpy'],
              ', '.join('%s (GCM_WINOGRAD=%s)' % (
                  p, workers[args.models[0], p].info['GCM_WINOGRAD'])
                  for p in args.paths),
              torch_info['versions']['torch'],
              torch_info['versions']['cpu_capability'],
              torch_info['versions']['python']))
    return 0


if __name__ == '__main__':
    sys.exit(main())
