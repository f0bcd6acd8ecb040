"""Table 3's runs as a Slurm job array (examples/slurm/table3.sbatch) on a
real Slurm cluster of one node (tests/slurm_cluster.py): a tiny recipe,
two seeds, one task requeued in the middle of its run as a preemption
would requeue it, another told that its time limit is near; every run
finishes, the two interrupted ones equal their uninterrupted twins bit for
bit, and the job that depends on the array writes Table 3.

Runs where the tests run as root (CI does; on Debian it installs
slurm-wlm and munge where they are missing); elsewhere it is skipped,
and in CI (CI=true) it fails instead, so that every CI run proves it."""
import os
import re
import shlex
import subprocess
import sys
import time

import numpy as np
import pytest

import slurm_cluster
from test_preemption import _same_files
from test_train import CLASSES, _draw

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'examples', 'slurm', 'table3.sbatch')
# 120 images of 8x8 in batches of 2: 60 steps an epoch, a second or two
RECIPE = ['--epochs', '3', '--batch-size', '2', '--lr-steps', '2',
          '--learning-rate', '0.05', '--pad', '1']
SEEDS = 2
TIMEOUT = 900  # for the whole array and Table 3; a few minutes here


@pytest.fixture(scope='module')
def cluster():
    reason = slurm_cluster.unavailable()
    if reason:
        if os.environ.get('CI') == 'true':
            pytest.fail('CI must run the Slurm test: ' + reason)
        pytest.skip(reason)
    slurm_cluster.install()
    with slurm_cluster.Cluster() as cluster:
        yield cluster


def shapes(root, train, test):
    """test_train's 8x8 circles, crosses and squares, so that the runs
    learn something and Table 3's spread is not 0."""
    rng = np.random.RandomState(0)
    for split, n in (('train', train), ('test', test)):
        for kind in CLASSES:
            os.makedirs(os.path.join(root, split, kind))
            for i in range(n):
                _draw(kind, rng).save(os.path.join(root, split, kind,
                                                   '%d.png' % i))


def _job(cluster, job):
    """scontrol's record of a job (of each task, for an array) as
    [{field: value}]."""
    records = []
    for block in cluster.run('scontrol', '-o', 'show', 'job',
                             str(job)).splitlines():
        records.append(dict(re.findall(r'(\w+)=(\S*)', block)))
    return records


def _state(cluster, job):
    return _job(cluster, job)[0]['JobState']


def test_table3_array_survives_a_requeue_and_a_time_limit(cluster, tmp_path):
    data, runs = str(tmp_path / 'data'), str(tmp_path / 'runs')
    results, twins = str(tmp_path / 'results'), str(tmp_path / 'twins')
    shapes(data, train=40, test=10)
    env = cluster.env(
        GCM='%s %s' % (shlex.quote(sys.executable),
                       shlex.quote(os.path.join(ROOT, 'run_cifar10.py'))),
        RUNS=runs, RESULTS=results, TABLE3_OPTIONS='--no-timing',
        # two tasks at a time on two cores
        TASK_OPTIONS='--cpus-per-task=1')
    started = time.time()
    # as a user would: `sbatch` the script, whose small job submits the
    # array and the Table 3 job and says so in its log
    launched = subprocess.run(
        ['sbatch', '--parsable', SCRIPT, '--seeds', str(SEEDS), '--data',
         data] + RECIPE, cwd=str(tmp_path), env=env, capture_output=True,
        text=True, timeout=60)
    assert launched.returncode == 0, launched.stderr
    launcher = launched.stdout.strip()
    while _state(cluster, launcher) in ('PENDING', 'RUNNING', 'CONFIGURING',
                                        'COMPLETING'):
        assert time.time() - started < 300, cluster.logs()
        time.sleep(0.2)
    with open(str(tmp_path / ('gcm-table3-%s.out' % launcher))) as f:
        submitted = f.read()
    assert _job(cluster, launcher)[0]['ExitCode'] == '0:0', submitted
    found = re.search(r'job list: (\S+) \((\d+) runs\)\n'
                      r'job array: (\d+) .*\ntable3 job: (\d+) ', submitted)
    assert found, submitted
    jobs_file, array, final = found.group(1), found.group(3), found.group(4)
    with open(jobs_file) as f:
        lines = f.read().splitlines()
    assert len(lines) == int(found.group(2)) == 3 * SEEDS

    # task 0 is requeued as a preemption would requeue it; task 1 gets the
    # signal its time limit would send (B:USR1, to the batch shell only)
    interrupt = {0: ['scontrol', 'requeue', '%s_0' % array],
                 1: ['scancel', '--batch', '--signal=USR1', '%s_1' % array]}
    # their twins, uninterrupted, outside Slurm
    twin_runs = {}
    for task in interrupt:
        words = shlex.split(lines[task])
        words[words.index('--out') + 1] = os.path.join(twins, str(task))
        twin_runs[task] = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, 'run_cifar10.py')] + words,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        statuses = _interrupt_and_wait(cluster, array, final, lines,
                                       interrupt, started)
        for task, child in twin_runs.items():
            output, _ = child.communicate(timeout=TIMEOUT)
            assert child.returncode == 0, output
    finally:
        for child in twin_runs.values():
            if child.poll() is None:
                child.kill()
                child.communicate()
    assert statuses[0] == 0  # scontrol requeue (scancel was stopped)
    minutes = (time.time() - started) / 60
    print('the array and Table 3 took %.1f min' % minutes)

    tasks = {int(r['ArrayTaskId']): r for r in _job(cluster, array)}
    assert sorted(tasks) == list(range(3 * SEEDS))
    for task, record in tasks.items():
        assert (record['JobState'], record['ExitCode']) == (
            'COMPLETED', '0:0'), record
        assert record['Restarts'] == ('1' if task in interrupt else '0')
        out = shlex.split(lines[task])
        out = out[out.index('--out') + 1]
        assert os.path.isfile(os.path.join(out, 'metrics.json')), task
    for task in interrupt:
        with open(os.path.join(runs, 'slurm', '%s_%d.out' % (array, task))) \
                as f:
            log = f.read()
        assert 'attempt 1,' in log and 'attempt 2,' in log
        assert re.search(r'stopped by SIGTERM (in|before) epoch [23]', log)
        assert re.search(r'resuming \S+ after epoch [12]\n', log), log
        if task == 1:  # signalled once, requeued by the job script
            assert log.count('the time limit is near') == 1
            assert log.count('== requeueing') == 1
        out = shlex.split(lines[task])
        _same_files(out[out.index('--out') + 1],
                      os.path.join(twins, str(task)))

    table3 = _job(cluster, final)[0]
    assert (table3['JobState'], table3['ExitCode']) == ('COMPLETED', '0:0')
    assert table3['StartTime'] >= max(r['EndTime'] for r in tasks.values())
    with open(os.path.join(results, 'table3.md')) as f:
        table = f.read()
    for model in ('gcm', 'cnn', 'gcm-clip'):  # each over its two seeds
        assert re.search(r'\n\| %s \(epochs 3, [^|]*\| variant \|[^\n]* '
                         r'\d+\.\d\d ± \d+\.\d\d \(n=2\) \|' % model,
                         table), table


def _interrupt_and_wait(cluster, array, final, lines, interrupt,
                        started):
    """Interrupt each task of `interrupt` once its run has a checkpoint
    and before it finishes, let Slurm start it again without its usual
    two minutes' wait, and wait for the Table 3 job to end. Returns the
    exit status of each interrupting command."""
    waiting = dict(interrupt)  # tasks still to interrupt
    running = {}               # task: its interrupting command
    restarted = set()
    for tick in range(10 ** 9):
        assert time.time() - started < TIMEOUT, cluster.logs()
        for task in list(waiting):  # a file's existence: looked at often
            out = shlex.split(lines[task])
            out = out[out.index('--out') + 1]
            if os.path.exists(os.path.join(out, 'checkpoint.npz')):
                assert not os.path.exists(os.path.join(out, 'metrics.json'))
                # not waited for: scancel --batch on a task of an array
                # with pending tasks delivers the signal, is told "Job can
                # not be altered now" and tries again every few seconds
                running[task] = subprocess.Popen(
                    waiting.pop(task), env=cluster.env(),
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                    text=True)
        time.sleep(0.05)
        if tick % 10:  # Slurm's clients: about twice a second
            continue
        for task in set(running) - restarted:
            if _state(cluster, '%s_%d' % (array, task)) != 'PENDING':
                continue
            command = running[task]
            if command.poll() is None:  # before it signals the next attempt
                command.kill()
            command.communicate()
            # a requeued job waits about two minutes before it may start
            # again; the test need not
            cluster.run('scontrol', 'update', 'JobId=%s_%d' % (array, task),
                        'StartTime=now')
            restarted.add(task)
        if _state(cluster, final) not in ('PENDING', 'RUNNING',
                                          'CONFIGURING', 'COMPLETING'):
            assert not waiting, 'the runs ended before they were interrupted'
            return {task: c.returncode for task, c in running.items()}
