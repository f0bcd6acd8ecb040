"""`pip install .` and `pip install -e .` in a fresh virtual environment
(issue 13): `import gcm_lasagne`, the `gcm-lasagne` command and
examples/explain.py work from another folder, and the installed package's
dependencies are requirements.txt's pins.

One environment for the whole module (fixture `installed`), made from a
copy of the source so the build's files stay out of the repository; pip
may use its cache and PyPI. Every command runs in a folder outside the
source, without PYTHONPATH, so only the installed package can answer."""
import os
import shutil
import subprocess
import sys
import tomllib

import pytest

from gcm_lasagne.shipped import DEMO_MODEL

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# what is never part of the source (see .gitignore, .dockerignore)
NOT_SOURCE = shutil.ignore_patterns(
    '.git', '.venv', 'venv', 'build', 'dist', '*.egg-info', '__pycache__',
    '.pytest_cache', 'runs', 'results', 'data', 'explained')


def _pins():
    """requirements.txt's lines that are not comments or blank."""
    with open(os.path.join(ROOT, 'requirements.txt')) as f:
        lines = [line.split('#')[0].strip() for line in f]
    return [line for line in lines if line]


def _run(args, cwd, timeout=900):
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK='1')
    env.pop('PYTHONPATH', None)
    return subprocess.run([str(a) for a in args], cwd=str(cwd), env=env,
                          capture_output=True, text=True, timeout=timeout)


def _ok(done):
    assert done.returncode == 0, (done.args, done.stdout[-2000:],
                                  done.stderr[-4000:])
    return done.stdout


WHERE = ('import gcm_lasagne, os; from gcm_lasagne import fastconv, shipped; '
         'print(gcm_lasagne.__file__); print(shipped.model_path()); '
         'print(all(map(os.path.isfile, fastconv._C_FILES))); '
         'print(len(shipped.sample_paths()))')


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
    """Install, run everything once non-editable and once editable, and
    return each command's CompletedProcess by name (tests then read them in
    any order)."""
    base = tmp_path_factory.mktemp('install')
    src, venv, elsewhere = base / 'src', base / 'venv', base / 'elsewhere'
    shutil.copytree(ROOT, str(src), ignore=NOT_SOURCE)
    elsewhere.mkdir()
    _ok(_run([sys.executable, '-m', 'venv', venv], base))
    python, command = venv / 'bin' / 'python', venv / 'bin' / 'gcm-lasagne'
    out = {'venv': venv, 'src': src, 'elsewhere': elsewhere}
    try:
        _ok(_run([python, '-m', 'pip', 'install', '-q', '.'], src))
        out['where'] = _run([python, '-c', WHERE], elsewhere)
        out['requires'] = _run([python, '-c', 'import importlib.metadata as m'
                                '; print("\\n".join(m.requires("gcm-lasagne"'
                                ')))'], elsewhere)
        out['help'] = _run([command, '--help'], elsewhere)
        out['params'] = _run([command, 'table3', '--params-only'], elsewhere)
        out['demo'] = _run([command, 'demo'], elsewhere)
        out['example'] = _run([python, src / 'examples' / 'explain.py'],
                              elsewhere)
        _ok(_run([python, '-m', 'pip', 'install', '-q', '-e', src],
                 elsewhere))
        out['editable_where'] = _run([python, '-c', WHERE], elsewhere)
        out['editable_demo'] = _run([command, 'demo', '--out', 'editable'],
                                    elsewhere)
        yield out
    finally:
        shutil.rmtree(str(venv), ignore_errors=True)  # about 400 MB


def test_pyproject_reads_its_dependencies_from_requirements_txt():
    with open(os.path.join(ROOT, 'pyproject.toml'), 'rb') as f:
        project = tomllib.load(f)
    assert 'dependencies' in project['project']['dynamic']
    assert 'dependencies' not in project['project']   # no second list
    assert project['tool']['setuptools']['dynamic']['dependencies'] == {
        'file': ['requirements.txt']}
    # setuptools takes plain requirement lines only (no -r, no options)
    assert _pins() and all('==' in line and not line.startswith('-')
                           for line in _pins())
    assert project['project']['scripts'] == {
        'gcm-lasagne': 'gcm_lasagne.cli:main'}


def test_the_installed_dependencies_are_the_pins(installed):
    assert _ok(installed['requires']).split() == _pins()


def test_import_from_another_folder_uses_the_installed_copy(installed):
    package, model, has_c, samples = _ok(installed['where']).split()
    site = str(installed['venv'])
    assert package.startswith(site) and model.startswith(site)
    assert model.endswith(os.path.join('_shipped', 'models', DEMO_MODEL,
                                       'model.npz'))
    assert has_c == 'True' and samples == '30'


def test_the_command_is_named_as_invoked(installed):
    assert _ok(installed['help']).startswith('usage: gcm-lasagne ')


def test_params_only_table3(installed):
    assert '| gcm | 162010 |' in _ok(installed['params'])


def test_demo_finds_the_shipped_model_from_another_folder(installed):
    text = _ok(installed['demo'])
    folder = installed['elsewhere'] / 'results' / 'demo'
    for name in ('figure6.png', 'figure8.png'):
        assert 'wrote %s' % os.path.join('results', 'demo', name) in text
        assert os.path.getsize(str(folder / name)) > 10000


def test_the_example_runs(installed):
    text = _ok(installed['example'])
    lines = text.splitlines()
    assert len(lines) == 3 and lines[-1] == 'wrote explained.png'
    for line, name in zip(lines, ('cat', 'ship')):
        assert os.path.join(name, '0000.jpg:') in line
        assert line.count('%') == 3   # the top three classes
    assert os.path.getsize(str(installed['elsewhere'] /
                               'explained.png')) > 10000


def test_an_editable_install_uses_the_source(installed):
    package, model, has_c, samples = _ok(installed['editable_where']).split()
    src = str(installed['src'])
    assert package == os.path.join(src, 'gcm_lasagne', '__init__.py')
    assert model == os.path.join(src, 'models', DEMO_MODEL, 'model.npz')
    assert has_c == 'True' and samples == '30'
    _ok(installed['editable_demo'])
    assert os.path.exists(str(installed['elsewhere'] / 'editable' /
                              'figure6.png'))
