"""The image's entry point (docker/entrypoint.sh) run here, outside Docker.

Theano logs a failed GPU start (pygpu's error, a traceback) while it is
imported, before gcm_lasagne.device can stop with its one-line reason; the
entry point shows only that line. Everything else the check prints still
gets through: all of it when the check breaks without a reason, and its
warnings when it passes.
"""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENTRYPOINT = os.path.join(ROOT, 'docker', 'entrypoint.sh')


def entrypoint(flags, *command, pythonpath=ROOT):
    env = {k: v for k, v in os.environ.items()
           if k not in ('GCM_SKIP_DEVICE_CHECK', 'PYTHONPATH')}
    env.update(THEANO_FLAGS=flags, PYTHONPATH=pythonpath,
               PATH=os.path.dirname(sys.executable) + os.pathsep
               + os.environ.get('PATH', ''))
    # run from / so that the package is found through PYTHONPATH only
    return subprocess.run(['sh', ENTRYPOINT] + list(command),
                          capture_output=True, text=True, env=env,
                          timeout=120, cwd='/')


def test_a_missing_gpu_is_one_line_and_nothing_runs():
    # Without the entry point, the same check prints Theano's own
    # "ERROR (theano.gpuarray): ..." lines before its reason.
    bare = subprocess.run(
        [sys.executable, '-m', 'gcm_lasagne.device'], capture_output=True,
        text=True, timeout=120, cwd='/',
        env=dict(os.environ, THEANO_FLAGS='device=cuda99', PYTHONPATH=ROOT))
    assert bare.returncode == 1
    assert len(bare.stderr.strip().splitlines()) > 1, bare.stderr

    out = entrypoint('device=cuda99', 'python', '-c', 'print("RAN")')
    assert out.returncode == 1
    assert out.stdout == ''
    assert out.stderr.splitlines() == [bare.stderr.strip().splitlines()[-1]]
    assert out.stderr.startswith(
        'error: THEANO_FLAGS asks for device=cuda99 but Theano could not '
        'start its GPU back-end (')


def test_a_check_that_breaks_shows_everything_it_printed():
    out = entrypoint('device=cpu', 'python', '-c', 'print("RAN")',
                     pythonpath=os.path.join(ROOT, 'no-such-folder'))
    assert out.returncode == 1
    assert out.stdout == ''
    assert "No module named 'gcm_lasagne'" in out.stderr


def test_a_passing_check_keeps_its_warnings_and_runs_the_command():
    out = entrypoint('device=cpu,no_such_flag=1', 'python', '-c',
                     'print("RAN")')
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        'Theano device: cpu (no GPU requested)', 'RAN']
    assert 'Theano does not recognise this flag: no_such_flag' in out.stderr


def test_the_command_keeps_its_own_status_and_streams():
    out = entrypoint('device=cpu', 'python', '-c',
                     'import sys; print("out"); '
                     'sys.stderr.write("err\\n"); sys.exit(3)')
    assert out.returncode == 3
    assert out.stdout.splitlines()[-1] == 'out'
    assert out.stderr == 'err\n'
