#!/usr/bin/env python
"""Why inference speed has "two levels" (docs/performance.md: GCM at about
1,850 and about 2,500 images/s on different days, runs and models): the
same deterministic forward pass (the probabilities, batch 128, as
evaluation runs it) timed in worker processes started under settings that
could make such levels, the workers of all settings taking turns, round
after round. Run from the repository root on an idle machine:

    .venv/bin/python benchmarks/inference_levels.py --model gcm --rounds 3

Settings (each a fresh worker process):
- default: what `import gcm_lasagne` configures;
- malloc-default: GLIBC_TUNABLES=glibc.malloc.check=0 (glibc's default),
  so compat leaves glibc's malloc as it is (freed 8 MB activations go back
  to the kernel and fault in again, or not, depending on glibc's dynamic
  mmap threshold);
- no-thp: NUMPY_MADVISE_HUGEPAGE=0 (numpy asks for transparent huge pages
  for arrays of 4 MB and more; whether it gets them depends on the kernel's
  free memory);
- allow-gc-off: THEANO_FLAGS=allow_gc=False (every intermediate kept);
- omp-passive / omp-bind: OMP_WAIT_POLICY=passive (threads sleep at once
  between parallel regions) / OMP_PROC_BIND=true (threads pinned);
- batch-100 / batch-256: the batch sizes of Model.predict and train.evaluate;
- one-thread: OMP_NUM_THREADS=1, whose rate moves with the machine but not
  with thread scheduling.
Per timed block (--batches calls): wall images/s, this process's CPU
milliseconds per batch, minor page faults and involuntary context switches
per batch, and the CPU the rest of the machine used meanwhile (cores, from
/proc/stat minus this process): a slow block with other processes busy is
contention, one with page faults is memory. After each block a probe
that involves neither Theano nor this project's code, numpy's float32
matrix multiply (512 x 512, --probe calls), measures how fast the machine
computes at that moment: where inference and the probe rise and fall
together (their correlation over the blocks is printed), the levels are
the machine's.
"""
import argparse
import datetime
import json
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SETTINGS = {
    'default': ({}, None),
    'malloc-default': ({'GLIBC_TUNABLES': 'glibc.malloc.check=0'}, None),
    'no-thp': ({'NUMPY_MADVISE_HUGEPAGE': '0'}, None),
    'allow-gc-off': ({'THEANO_FLAGS': 'allow_gc=False'}, None),
    'omp-passive': ({'OMP_WAIT_POLICY': 'passive'}, None),
    'omp-bind': ({'OMP_PROC_BIND': 'true'}, None),
    'batch-100': ({}, 100),
    'batch-256': ({}, 256),
    'one-thread': ({'OMP_NUM_THREADS': '1'}, None),
}


def _busy_jiffies():
    """CPU time of the whole machine, in clock ticks: all but idle and
    iowait."""
    with open('/proc/stat') as f:
        values = [int(v) for v in f.readline().split()[1:]]
    return sum(values) - values[3] - values[4]


def worker(args):
    sys.path.insert(0, ROOT)
    import numpy as np
    import gcm_lasagne  # noqa: F401  (configures Theano)
    import theano
    import theano.tensor as T
    from gcm_lasagne import inference
    from gcm_lasagne.models import build_model
    x = T.tensor4('x')
    net = build_model(args.model, 10, (3, args.size, args.size),
                      input_var=x)
    fn = theano.function([x], inference.get_output(net['prob']))
    X = np.random.RandomState(0).uniform(
        0, 1, (args.batch, 3, args.size, args.size)).astype('float32')
    fn(X)
    fn(X)
    tick = os.sysconf('SC_CLK_TCK')
    A = np.random.RandomState(1).uniform(size=(512, 512)).astype('float32')
    blocks = []
    for _ in range(args.blocks):
        r0, b0 = resource.getrusage(resource.RUSAGE_SELF), _busy_jiffies()
        t0 = time.perf_counter()
        for _ in range(args.batches):
            fn(X)
        wall = time.perf_counter() - t0
        r1, b1 = resource.getrusage(resource.RUSAGE_SELF), _busy_jiffies()
        own = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
        t0 = time.perf_counter()
        for _ in range(args.probe):
            A.dot(A)
        probe = 2 * 512 ** 3 * args.probe / (time.perf_counter() - t0) / 1e9
        blocks.append({
            'probe_gflops': probe,
            'images_per_s': args.batch * args.batches / wall,
            'cpu_ms_per_batch': 1e3 * own / args.batches,
            'minor_faults_per_batch': (r1.ru_minflt - r0.ru_minflt)
            / args.batches,
            'involuntary_switches_per_batch': (r1.ru_nivcsw - r0.ru_nivcsw)
            / args.batches,
            'others_cores': max(0.0, ((b1 - b0) / tick - own) / wall)})
    print(json.dumps(blocks))


def run(setting, args):
    env, batch = SETTINGS[setting]
    cmd = [sys.executable, os.path.abspath(__file__), '--worker',
           '--model', args.model, '--blocks', str(args.blocks),
           '--batches', str(args.batches), '--size', str(args.size),
           '--batch', str(batch or args.batch), '--probe', str(args.probe)]
    done = subprocess.run(cmd, env=dict(os.environ, **env), cwd=ROOT,
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit('%s failed:\n%s' % (setting, done.stderr))
    return json.loads(done.stdout.strip().splitlines()[-1])


def summary(blocks):
    def med(key):
        return statistics.median(b[key] for b in blocks)
    rates = [b['images_per_s'] for b in blocks]
    return {'median': med('images_per_s'), 'min': min(rates),
            'max': max(rates), 'cpu_ms': med('cpu_ms_per_batch'),
            'faults': med('minor_faults_per_batch'),
            'switches': med('involuntary_switches_per_batch'),
            'others': med('others_cores'), 'probe': med('probe_gflops'),
            'r': correlation([b['images_per_s'] for b in blocks],
                             [b['probe_gflops'] for b in blocks])}


def correlation(a, b):
    """Pearson's r of two lists (nan if either is constant)."""
    ma, mb = statistics.fmean(a), statistics.fmean(b)
    cov = sum((x - ma) * (y - mb) for x, y in zip(a, b))
    var = (sum((x - ma) ** 2 for x in a) * sum((y - mb) ** 2 for y in b))
    return cov / var ** 0.5 if var else float('nan')


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--model', default='gcm')
    p.add_argument('--settings', default=','.join(SETTINGS))
    p.add_argument('--rounds', type=int, default=3)
    p.add_argument('--blocks', type=int, default=8)
    p.add_argument('--batches', type=int, default=10)
    p.add_argument('--batch', type=int, default=128)
    p.add_argument('--size', type=int, default=32)
    p.add_argument('--probe', type=int, default=100,
                   help='matrix multiplies of the probe after each block')
    p.add_argument('--json', help='write every block here')
    p.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)
    settings = args.settings.split(',')
    started = datetime.datetime.utcnow().strftime('%Y-%m-%d %H:%M UTC')
    blocks = {s: [] for s in settings}
    print('| round | setting | images/s, median | range | CPU ms a batch '
          '| minor faults a batch | involuntary switches a batch | '
          'others\' CPU, cores |\n|---|---|---:|---:|---:|---:|---:|---:|')
    for r in range(1, args.rounds + 1):
        for s in settings:
            got = run(s, args)
            blocks[s] += got
            m = summary(got)
            print('| %d | %s | %.0f | %.0f-%.0f | %.1f | %.0f | %.1f | %.2f |'
                  % (r, s, m['median'], m['min'], m['max'], m['cpu_ms'],
                     m['faults'], m['switches'], m['others']), flush=True)
    print('\nAll rounds (%s, %s, batch %d unless named, %d blocks of %d '
          'calls per worker):\n' % (started, args.model, args.batch,
                                    args.blocks, args.batches))
    print('| setting | images/s, median | range | CPU ms a batch | minor '
          'faults a batch | others\' CPU, cores | probe GFLOP/s, median | '
          'r(images/s, probe) |\n|---|---:|---:|---:|---:|---:|---:|---:|')
    for s in settings:
        m = summary(blocks[s])
        print('| %s | %.0f | %.0f-%.0f | %.1f | %.0f | %.2f | %.0f | %.2f |'
              % (s, m['median'], m['min'], m['max'], m['cpu_ms'],
                 m['faults'], m['others'], m['probe'], m['r']))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'started': started, 'args': vars(args),
                       'blocks': blocks}, f, indent=1)


if __name__ == '__main__':
    main()
