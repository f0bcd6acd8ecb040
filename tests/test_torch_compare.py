"""benchmarks/torch_compare.py without PyTorch in the project: its options,
its table and its skip; with a PyTorch venv at hand ($TORCH_PYTHON or
../torch-venv), also its --check and a tiny timed run (no speed asserted)."""
import importlib.util
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'benchmarks', 'torch_compare.py')
spec = importlib.util.spec_from_file_location('torch_compare', SCRIPT)
tc = importlib.util.module_from_spec(spec)
sys.path.insert(0, os.path.dirname(SCRIPT))  # for its paths.py
try:
    spec.loader.exec_module(tc)
finally:
    sys.path.pop(0)


def run(*argv):
    return subprocess.run([sys.executable, SCRIPT] + list(argv),
                          capture_output=True, text=True, cwd=ROOT)


def test_options():
    args = tc.parse_args(['--paths', 'winograd,direct', '--models', 'cnn'])
    assert args.paths == ['winograd', 'direct'] and args.models == ['cnn']
    assert (args.repeats, args.steps, args.batch, args.size) == (
        7, 10, 128, 32)
    for bad in (['--paths', 'fast'], ['--paths', 'direct,direct'],
                ['--models', ''], ['--size', '30'], ['--repeats', '0']):
        with pytest.raises(SystemExit):
            tc.parse_args(bad)


def test_table_gives_medians_and_the_spread_of_pair_ratios():
    args = tc.parse_args(['--models', 'gcm', '--paths', 'winograd,direct'])
    rates = {('gcm', 'winograd', 'train'): [200., 300., 400.],
             ('gcm', 'direct', 'train'): [100., 100., 150.],
             ('gcm', 'torch', 'train'): [100., 100., 100.],
             ('gcm', 'winograd', 'infer'): [1000., 1000., 1000.],
             ('gcm', 'direct', 'infer'): [500., 500., 500.],
             ('gcm', 'torch', 'infer'): [1000., 500., 2000.]}
    lines = tc.table(args, rates).splitlines()
    assert len(lines) == 4
    assert lines[2] == ('| gcm | winograd | 300 | 100 | 3.00 (2.00-4.00) '
                        '| 1000 | 1000 | 1.00 (0.50-2.00) |')
    assert lines[3] == ('| gcm | direct | 100 | 100 | 1.00 (1.00-1.50) '
                        '| 500 | 1000 | 0.50 (0.25-1.00) |')


def test_the_processor_is_named_with_its_generation_and_vector_width():
    machine = sys.modules[tc.processor.__module__]  # benchmarks/machine.py
    text = machine.processor()
    assert re.search(r'\(family \S+, model \S+; (AVX-512|AVX2|no AVX2)\)$',
                     text) or text == 'unknown processor', text
    assert machine.cpu_name() == '%s, %d cores' % (text, os.cpu_count())


def test_check_skips_with_a_reason_without_torch(tmp_path):
    done = run('--check', '--torch-python', str(tmp_path / 'no-python'))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith('skipped: no PyTorch at %s'
                                  % (tmp_path / 'no-python'))
    # a timing run cannot skip: it says why it stopped
    done = run('--torch-python', str(tmp_path / 'no-python'))
    assert done.returncode != 0 and 'give --torch-python' in done.stderr


def torch_python():
    python = tc.default_torch_python()
    version, why = tc.torch_version(python)
    if version is None:
        pytest.skip('no PyTorch venv at %s (%s): set TORCH_PYTHON' % (
            python, why))
    return python


def test_check_finds_the_same_networks():
    done = run('--check', '--size', '8', '--batch', '4',
               '--torch-python', torch_python())
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert 'same networks (tolerance 0.0001): yes' in done.stdout
    assert done.stdout.count('max |ours - PyTorch|') == 4


def test_a_tiny_timed_run_prints_the_table():
    done = run('--size', '8', '--batch', '2', '--steps', '1', '--repeats',
               '2', '--models', 'gcm', '--paths', 'winograd,direct',
               '--torch-python', torch_python())
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines()
            if line.startswith('| gcm |')]
    assert [r.split(' | ')[1] for r in rows] == ['winograd', 'direct']
    assert 'gcm 162,010 / 162,010 / 162,010' in done.stdout
