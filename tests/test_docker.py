"""The Docker images built and run for real, through docker/build-local.sh.

Runs where a Docker engine can: one already answers, or this is root with
Debian's docker.io installable (the script installs it, starts the daemon
and makes the base image with debootstrap). Skipped otherwise, with the
reason; GCM_DOCKER_TESTS=0 skips it on purpose, and GCM_DOCKER_TESTS=require
(.ci/run) turns a skip into a failure.

Both variants are built once for the module, under the tag
gcm-lasagne-test (not the user's gcm-lasagne). The cpu image runs the
project: the parameter check, `demo` and a short `reproduce` on JPEG
CIFAR-10 images from ../shared/data, writing into folders mounted from
here, and the bare default command. The cuda11 image passes its self-check
and, without a GPU, stops with one line. Everything the module made is
removed at the end: containers, images, the cache volume, the base image
and the build cache if the script made them, the daemon if it started it.
"""
import collections
import os
import re
import shutil
import signal
import subprocess
import tarfile
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'docker', 'build-local.sh')
JPEG_TAR = os.path.join(os.path.dirname(ROOT), 'shared', 'data',
                        'cifar10-jpeg.tar.gz')
IMAGE = 'gcm-lasagne-test'
BASE = 'debian:bookworm-slim'
MODE = os.environ.get('GCM_DOCKER_TESTS', '')
PNG = b'\x89PNG\r\n\x1a\n'

Engine = collections.namedtuple('Engine', 'cache')


def client():
    return shutil.which('docker') or '/usr/bin/docker'


def docker(*args, timeout=120):
    return subprocess.run([client()] + list(args), capture_output=True,
                          text=True, timeout=timeout)


def engine_answers():
    try:
        return docker('info', timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def why_no_engine():
    if MODE == '0':
        return 'GCM_DOCKER_TESTS=0'
    if engine_answers():
        return None
    if os.geteuid() != 0:
        return ('no Docker engine answers, and installing or starting one '
                'needs root')
    if not (shutil.which('dockerd') or shutil.which('apt-get')):
        return "no Docker engine, and no apt-get to install Debian's docker.io"
    return None


def log_tail(path, lines=40):
    with open(path, errors='replace') as f:
        return ''.join(f.readlines()[-lines:])


@pytest.fixture(scope='module')
def engine(tmp_path_factory):
    reason = why_no_engine()
    if reason:
        if MODE == 'require':
            pytest.fail('GCM_DOCKER_TESTS=require, but ' + reason)
        pytest.skip(reason)
    log = str(tmp_path_factory.mktemp('docker') / 'build.log')
    cache = '%s-cache-%d' % (IMAGE, os.getpid())
    try:
        with open(log, 'w') as f:
            build = subprocess.run(
                ['bash', SCRIPT, 'cpu', 'cuda11'], stdout=f,
                stderr=subprocess.STDOUT, timeout=1800,
                env=dict(os.environ, IMAGE=IMAGE))
        if build.returncode != 0:
            pytest.fail('docker/build-local.sh failed:\n' + log_tail(log))
        assert docker('volume', 'create', cache).returncode == 0
        yield Engine(cache)
    finally:
        clean_up(log, cache)


def clean_up(log, cache):
    for name in running_containers():
        docker('rm', '-f', name)
    docker('rmi', '-f', IMAGE + ':cpu', IMAGE + ':cuda11', IMAGE)
    docker('volume', 'rm', cache)
    with open(log, errors='replace') as f:
        said = f.read()
    if 'build-local: made %s' % BASE in said:
        docker('rmi', BASE)
    if 'build-local: starting dockerd' in said:
        # the daemon and its build cache exist only for this module
        docker('builder', 'prune', '-af', timeout=600)
        stop_daemon()


def stop_daemon():
    with open('/run/gcm-lasagne-dockerd.pid') as f:
        pid = int(f.read())
    os.kill(pid, signal.SIGTERM)
    for _ in range(60):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(1)


_names = []


def running_containers():
    return [n for n in _names
            if docker('container', 'inspect', n).returncode == 0]


def run(engine, image, *command, volumes=(), env=(), timeout=600):
    """`docker run` of one container, on the host's network, as this user,
    with the module's Theano cache; removed even when it times out."""
    name = '%s-%d-%d' % (IMAGE, os.getpid(), len(_names))
    _names.append(name)
    args = ['run', '--rm', '--name', name, '--network', 'host',
            '--user', '%d:%d' % (os.getuid(), os.getgid()),
            '-v', engine.cache + ':/app/cache']
    for host, inside in volumes:
        args += ['-v', '%s:%s' % (host, inside)]
    for item in env:
        args += ['-e', item]
    try:
        return docker(*(args + ['%s:%s' % (IMAGE, image)] + list(command)),
                      timeout=timeout)
    except subprocess.TimeoutExpired:
        docker('rm', '-f', name)
        raise


def folder(tmp_path, name):
    path = tmp_path / name
    path.mkdir()
    return str(path)


def test_the_dockerfile_needs_nothing_from_a_registry_to_be_read():
    # a `# syntax=` directive makes BuildKit pull its frontend image first
    with open(os.path.join(ROOT, 'Dockerfile')) as f:
        for line in f:
            if not line.startswith('#'):
                break
            assert not re.match(r'#\s*syntax\s*=', line, re.I), line


def test_dockerignore_keeps_local_state_out():
    with open(os.path.join(ROOT, '.dockerignore')) as f:
        ignored = {l.strip() for l in f if l.strip() and l[0] != '#'}
    assert {'.git', '.venv', 'data', 'runs', 'results', 'cache',
            'runs-in-progress', '.pytest_cache', '**/__pycache__'} <= ignored


def test_the_build_context_leaves_local_files_out(engine):
    listing = run(engine, 'cpu', 'sh', '-c',
                  'ls -A /app; echo --; ls -A /app/data /app/runs '
                  '/app/results')
    assert listing.returncode == 0, listing.stderr
    top, _, volumes = listing.stdout.partition('--\n')
    top = top.split()
    for local in ('.git', '.venv', 'runs-in-progress', '.pytest_cache'):
        assert local not in top
    assert {'gcm_lasagne', 'models', 'samples', 'run_cifar10.py'} <= set(top)
    # only the folder names the three volumes print, no files in them
    assert [l for l in volumes.splitlines() if l and not l.endswith(':')] \
        == []


def test_parameter_counts_in_the_cpu_image(engine):
    out = run(engine, 'cpu', 'python', 'run_cifar10.py', 'table3',
              '--params-only')
    assert out.returncode == 0, out.stderr
    rows = {l.split('|')[1].strip(): [c.strip() for c in l.split('|')[2:5]]
            for l in out.stdout.splitlines() if l.startswith('| ')}
    assert rows['gcm'] == ['162010', '162K', '162K']
    assert rows['gcm-clip'] == ['162010', '162K', '162K']
    assert rows['cnn'] == ['164258', '164K', '164K']


def test_demo_writes_its_figures_into_the_mounted_folder(engine, tmp_path):
    results = folder(tmp_path, 'results')
    out = run(engine, 'cpu', 'python', 'run_cifar10.py', 'demo',
              volumes=[(results, '/app/results')])
    assert out.returncode == 0, out.stderr
    for name in ('figure6.png', 'figure8.png'):
        path = os.path.join(results, 'demo', name)
        with open(path, 'rb') as f:
            assert f.read(8) == PNG
        assert os.stat(path).st_uid == os.getuid()


def test_the_bare_command_stops_with_one_line_without_data(engine, tmp_path):
    data = folder(tmp_path, 'data')
    # https_proxy to a closed local port: the download fails here whatever
    # network the machine has, and no traffic leaves it
    out = run(engine, 'cpu', volumes=[(data, '/app/data')],
              env=['https_proxy=http://127.0.0.1:9'])
    assert out.returncode == 1
    assert out.stderr.splitlines() == [out.stderr.strip()]
    assert out.stderr.startswith(
        'error: no CIFAR-10 archive at /app/data/cifar-10-python.tar.gz and '
        'it could not be downloaded (')
    assert os.listdir(data) == []
    assert out.stdout.splitlines()[0] == 'Theano device: cpu (no GPU requested)'


@pytest.fixture(scope='module')
def jpeg_subset(tmp_path_factory):
    """300 training and 100 test images of the JPEG CIFAR-10, the first of
    each class."""
    if not os.path.exists(JPEG_TAR):
        (pytest.fail if MODE == 'require' else pytest.skip)('no ' + JPEG_TAR)
    root = tmp_path_factory.mktemp('jpeg')
    wanted = re.compile(
        r'^cifar10-jpeg/(train/\w+/00[0-2]\d|test/\w+/000\d)\.jpg$')
    with tarfile.open(JPEG_TAR) as tar:
        members = [m for m in tar if m.isfile() and wanted.match(m.name)]
        safe = {'filter': 'data'} if hasattr(tarfile, 'data_filter') else {}
        tar.extractall(str(root), members=members, **safe)
    assert len(members) == 400
    return str(root / 'cifar10-jpeg')


def test_a_short_reproduce_on_mounted_data(engine, jpeg_subset, tmp_path):
    runs, results = folder(tmp_path, 'runs'), folder(tmp_path, 'results')
    out = run(engine, 'cpu', 'python', 'run_cifar10.py',
              '--runs', '/app/runs', '--results', '/app/results',
              'reproduce', '--data', '/data/cifar10-jpeg', '--epochs', '1',
              '--train-subset', '256', '--batch-size', '64', '--lr-steps',
              volumes=[(jpeg_subset, '/data/cifar10-jpeg:ro'),
                       (runs, '/app/runs'), (results, '/app/results')],
              timeout=1200)
    assert out.returncode == 0, out.stderr[-3000:]
    for model in ('gcm', 'cnn', 'gcm-clip'):
        assert os.path.exists(os.path.join(runs, model, 'metrics.json'))
    with open(os.path.join(results, 'table3.md')) as f:
        table = f.read()
    # not Table 2's recipe: the three runs are listed as variants
    for model in ('gcm', 'cnn', 'gcm-clip'):
        row = re.search(r'^\| %s \(epochs 1, batch size 64, lr steps none, '
                        r'train subset 256\) \| variant \|.*$' % model,
                        table, re.M)
        assert row and '| cifar10-jpeg |' in row.group(0), table
    assert os.path.exists(os.path.join(results, 'table3.csv'))
    for name in ('curves.png', 'gcm/figure6.png', 'gcm-clip/figure7.png'):
        with open(os.path.join(results, name), 'rb') as f:
            assert f.read(8) == PNG, name


def test_the_cuda11_image_passes_its_self_check(engine):
    out = run(engine, 'cuda11', 'python', 'docker/check_image.py',
              env=['GCM_SKIP_DEVICE_CHECK=1'])
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert 'NVRTC 11.8 compiles for compute_90' in lines
    assert lines[-1] == 'check_image: cuda11 variant OK'


def test_the_cuda11_image_without_a_gpu_says_so_in_one_line(engine):
    if docker('info', '--format', '{{.DefaultRuntime}}').stdout.strip() \
            == 'nvidia':
        pytest.skip("the engine's default runtime gives containers the GPUs")
    out = run(engine, 'cuda11', 'python', '-c', 'print("RAN")')
    assert out.returncode == 1
    assert out.stdout == ''
    assert out.stderr.splitlines() == [out.stderr.strip()]
    assert out.stderr.startswith(
        'error: THEANO_FLAGS asks for device=cuda but Theano could not start '
        'its GPU back-end (Could not load "libcuda.so"')
