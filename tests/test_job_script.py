"""examples/slurm/table3.sbatch without Slurm, so that it is tested
everywhere: stand-ins for `sbatch` and `scontrol` note their arguments,
and a shell loop that stops on SIGTERM with 143, as training does, stands
in for run_cifar10.py in a task. A task passes on its run's exit status,
forwards SIGTERM, and on USR1 (the time-limit signal) stops the run and
requeues its own task, not the array; the submission lists `jobs`' lines
and submits the array over them, then the Table 3 job after it.
tests/test_slurm.py runs the script on a real Slurm."""
import glob
import os
import signal
import stat
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'examples', 'slurm', 'table3.sbatch')
# prints its arguments, then runs until SIGTERM (status 143) or for
# $1 seconds (status $2)
RUN = """#!/bin/sh
echo "run: $*"
trap 'echo "run: stopping"; exit 143' TERM
i=0
while [ $i -lt $(($1 * 20)) ]; do sleep 0.05; i=$((i + 1)); done
exit $2
"""


def _executable(path, text):
    with open(path, 'w') as f:
        f.write(text)
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)


def _env(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(('SLURM_', 'SBATCH_'))}
    env.update(PATH='%s:%s' % (tmp_path / 'bin', os.environ['PATH']),
               GCM='run', SLURM_ARRAY_TASK_ID='1', SLURM_ARRAY_JOB_ID='7')
    env.update(extra)
    return env


@pytest.fixture
def task(tmp_path):
    """start(seconds, status): task 1 of array 7 running `run seconds
    status 'two words'`, its raw job id 7 (Slurm gives one task the
    array's own id); returns the script's process once the run has said
    its first line (its trap is set a moment later)."""
    (tmp_path / 'bin').mkdir()
    _executable(str(tmp_path / 'bin' / 'run'), RUN)
    _executable(str(tmp_path / 'bin' / 'scontrol'),
                '#!/bin/sh\necho "$*" >> %s\n' % (tmp_path / 'scontrol'))

    def start(seconds, status):
        jobs = tmp_path / 'jobs.txt'
        jobs.write_text("first line\n%d %d 'two words'\n" % (seconds, status))
        child = subprocess.Popen(
            ['bash', SCRIPT, 'task', str(jobs)], stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
            env=_env(tmp_path, SLURM_JOB_ID='7', SLURM_RESTART_COUNT='2'))
        for line in child.stdout:
            if line.startswith('run: '):
                assert line == 'run: %d %d two words\n' % (seconds, status)
                break
        time.sleep(0.3)
        return child
    return start


def _requeues(tmp_path):
    path = tmp_path / 'scontrol'
    return path.read_text().splitlines() if path.exists() else []


def test_the_line_runs_and_its_status_is_the_tasks(task, tmp_path):
    child = task(0, 3)
    output = child.communicate(timeout=30)[0]
    assert child.returncode == 3, output
    assert '== the run ended with status 3' in output
    assert _requeues(tmp_path) == []


def test_sigterm_is_passed_on_and_nothing_requeued(task, tmp_path):
    child = task(60, 0)
    child.send_signal(signal.SIGTERM)
    output = child.communicate(timeout=30)[0]
    assert child.returncode == 143, output
    assert 'run: stopping' in output
    assert _requeues(tmp_path) == []  # Slurm requeues, or it was cancelled


def test_usr1_stops_the_run_and_requeues_the_task(task, tmp_path):
    child = task(60, 0)
    child.send_signal(signal.SIGUSR1)
    output = child.communicate(timeout=30)[0]
    assert child.returncode == 143, output
    assert 'the time limit is near' in output and 'run: stopping' in output
    assert _requeues(tmp_path) == ['requeue 7_1']  # not 7: the whole array


def test_a_command_that_is_not_there_fails_the_task(tmp_path):
    (tmp_path / 'bin').mkdir()
    jobs = tmp_path / 'jobs.txt'
    jobs.write_text('a\nb\n')
    done = subprocess.run(['bash', SCRIPT, 'task', str(jobs)],
                          env=_env(tmp_path), capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 127, done.stdout + done.stderr


def test_a_task_past_the_end_of_the_list_fails(tmp_path):
    jobs = tmp_path / 'jobs.txt'
    jobs.write_text('only one\n')
    done = subprocess.run(['bash', SCRIPT, 'task', str(jobs)],
                          env=_env(tmp_path), capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 1
    assert done.stderr == 'error: %s has no line 2\n' % jobs


def test_submit_lists_the_runs_and_submits_the_array_then_table3(tmp_path):
    """With a stand-in sbatch that notes its arguments and answers job ids
    as `sbatch --parsable` does."""
    (tmp_path / 'bin').mkdir()
    _executable(str(tmp_path / 'bin' / 'sbatch'),
                '#!/bin/sh\necho "$*" >> %s\nwc -l < %s\n'
                % (tmp_path / 'sbatch', tmp_path / 'sbatch'))
    env = _env(tmp_path, RUNS='the runs', TASK_OPTIONS='--gpus=1 --time=60',
               GCM='%s %s' % (sys.executable,
                              os.path.join(ROOT, 'run_cifar10.py')))
    for key in ('SLURM_ARRAY_TASK_ID', 'SLURM_ARRAY_JOB_ID'):
        del env[key]
    done = subprocess.run(['bash', SCRIPT, '--seeds', '2', '--epochs', '3'],
                          cwd=str(tmp_path), env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    jobs = glob.glob(str(tmp_path / 'the runs' / 'slurm' / 'jobs-*.txt'))
    assert len(jobs) == 1
    listed = subprocess.run(
        [sys.executable, os.path.join(ROOT, 'run_cifar10.py'), '--runs',
         'the runs', 'jobs', '--seeds', '2', '--epochs', '3'],
        cwd=str(tmp_path), capture_output=True, text=True)
    with open(jobs[0]) as f:
        assert f.read() == listed.stdout and listed.stdout.count('\n') == 6
    jobs = os.path.relpath(jobs[0], str(tmp_path))
    array, table3 = (tmp_path / 'sbatch').read_text().splitlines()
    script = os.path.realpath(SCRIPT)
    assert array == ('--parsable --export=ALL --array=0-5 --output=the runs/'
                     'slurm/%%A_%%a.out --gpus=1 --time=60 %s task %s'
                     % (script, jobs))
    assert table3 == ('--parsable --export=ALL --dependency=afterok:1 '
                      '--kill-on-invalid-dep=yes --output=the runs/slurm/'
                      'table3-%%j.out %s table3' % script)
    assert done.stdout == (
        'job list: %s (6 runs)\njob array: 1 (logs: the runs/slurm/1_TASK.out)'
        '\ntable3 job: 2 (once every task has ended well; writes '
        'results/table3.md)\n' % jobs)


def test_a_requeued_submitting_job_submits_nothing(tmp_path):
    (tmp_path / 'bin').mkdir()
    _executable(str(tmp_path / 'bin' / 'sbatch'),
                '#!/bin/sh\ntouch %s\n' % (tmp_path / 'submitted'))
    env = _env(tmp_path, SLURM_RESTART_COUNT='1')
    done = subprocess.run(['bash', SCRIPT, '--seeds', '2'], cwd=str(tmp_path),
                          env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and 'was requeued' in done.stderr
    assert os.listdir(str(tmp_path)) == ['bin']
