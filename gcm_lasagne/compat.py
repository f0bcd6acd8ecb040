"""The one place that knows about version differences.

1. Theano is configured before its first import, so that the CPU path needs
   no THEANO_FLAGS: float32, a BLAS to link, OpenMP. Whatever the user sets
   (THEANO_FLAGS, the files named by THEANORC, ~/.theanorc) wins.
   glibc's malloc is told to keep freed memory (`keep_freed_memory`).
2. Lasagne 0.1 (the one on PyPI) imports on Theano 1.0.
3. TransposedConv2DLayer and a 'same' Conv2DLayer are Lasagne's own when
   the installed Lasagne has them (0.2.dev1), else the backports in
   `backport.py`. BatchNormLayer and batch_norm are always the backport's:
   master's semantics, with a fused training-mode op on the CPU.
"""
import configparser
import ctypes
import glob
import importlib.util
import os
import sys
import sysconfig
import types

# BLAS libraries Theano can link, best first: Debian's libopenblas-dev (or a
# conda env's), then the OpenBLAS inside scipy's wheel, which every pip
# install of requirements.txt has. numpy's own OpenBLAS is ILP64 with
# suffixed symbols, so Theano cannot call it directly.
_SYSTEM_LIB_DIRS = [
    os.path.join(sys.prefix, 'lib'),
    os.path.join('/usr/lib', sysconfig.get_config_var('MULTIARCH') or ''),
    '/usr/lib', '/usr/local/lib', '/usr/lib64',
]


def _system_openblas():
    for d in _SYSTEM_LIB_DIRS:
        if os.path.exists(os.path.join(d, 'libopenblas.so')):
            return '-L%s -lopenblas' % d
    return None


def _scipy_openblas():
    spec = importlib.util.find_spec('scipy')
    if spec is None or not spec.origin:
        return None
    libdir = os.path.join(os.path.dirname(os.path.dirname(spec.origin)),
                          'scipy.libs')
    for path in sorted(glob.glob(os.path.join(libdir, 'libopenblas*.so'))):
        name = os.path.basename(path)[len('lib'):-len('.so')]
        # -L also becomes an rpath in Theano's link line, so the compiled
        # modules find the library at run time.
        return '-L%s -l%s' % (libdir, name)
    return None


def blas_ldflags():
    """The `blas.ldflags` this module gives Theano ('' if no BLAS found)."""
    for flags in (_system_openblas(), _scipy_openblas()):
        # THEANO_FLAGS is split on commas and '=': such a path cannot pass.
        if flags and ',' not in flags and '=' not in flags:
            return flags
    return ''


def user_theano_settings():
    """Lower-case names of the Theano options the user has set anywhere."""
    keys = set()
    for item in os.environ.get('THEANO_FLAGS', '').split(','):
        if '=' in item:
            keys.add(item.split('=', 1)[0].strip().lower())
    rc = os.environ.get('THEANORC', '~/.theanorc' + os.pathsep
                        + '~/.theanorc.txt')
    parser = configparser.RawConfigParser()
    try:
        parser.read([os.path.expanduser(p) for p in rc.split(os.pathsep)])
    except configparser.Error:
        return keys  # Theano will report the broken file itself
    for section in parser.sections():
        for option in parser.options(section):
            keys.add(option if section == 'global'
                     else '%s.%s' % (section, option))
    return keys


def default_theano_flags():
    ldflags = blas_ldflags()
    flags = {'floatX': 'float32', 'blas.ldflags': ldflags}
    # With no BLAS to link, Theano calls numpy's through its C-API, and that
    # path crashes the process ("GIL is released") when OpenMP is on.
    flags['openmp'] = 'True' if ldflags else 'False'
    return flags


_MALLOC_ENV = ('MALLOC_MMAP_THRESHOLD_', 'MALLOC_TRIM_THRESHOLD_',
               'GLIBC_TUNABLES')


def keep_freed_memory():
    """Ask glibc's malloc to keep freed blocks of up to 32 MB in the heap
    instead of returning them to the kernel. A Theano step allocates and
    frees its activations (8 MB each for GCM at batch 128) every call; by
    default each is a fresh mmap whose pages fault in again on first touch.
    Measured +25-60% training speed (docs/performance.md). Without it the
    speed even has two levels: glibc's threshold for mmap rises by itself
    after a large free, or not (GCM inference: 2,000 page faults a batch
    in some processes, none in others; benchmarks/inference_levels.py).
    Skipped where the user configured malloc (GLIBC_TUNABLES only if it
    sets a glibc.malloc tunable: it is set for other reasons too), or
    where there is no glibc mallopt."""
    if any(name in os.environ for name in _MALLOC_ENV[:2]) or \
            'glibc.malloc.' in os.environ.get('GLIBC_TUNABLES', ''):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, 32 << 20)
                and mallopt(m_trim_threshold, 1 << 30))


def configure_theano():
    """Put our defaults into THEANO_FLAGS for every option the user left
    unset. Does nothing once Theano is imported: its config is fixed then."""
    if 'theano' in sys.modules:
        return
    user = user_theano_settings()
    ours = ['%s=%s' % (k, v) for k, v in default_theano_flags().items()
            if k.lower() not in user]
    if ours:
        given = os.environ.get('THEANO_FLAGS', '')
        os.environ['THEANO_FLAGS'] = ','.join([given] + ours if given
                                              else ours)


def _install_downsample_shim():
    """Lasagne 0.1 imports theano.tensor.signal.downsample, which Theano 1.0
    replaced with theano.tensor.signal.pool."""
    import theano.tensor.signal
    from theano.tensor.signal import pool
    try:
        import theano.tensor.signal.downsample  # noqa: F401 (old Theano)
        return
    except ImportError:
        pass

    def max_pool_2d(input, ds, ignore_border=None, st=None, padding=(0, 0),
                    mode='max'):
        return pool.pool_2d(input, ws=ds, ignore_border=ignore_border,
                            stride=st, pad=padding, mode=mode)

    shim = types.ModuleType('theano.tensor.signal.downsample')
    shim.max_pool_2d = max_pool_2d
    sys.modules[shim.__name__] = shim
    theano.tensor.signal.downsample = shim


configure_theano()
MALLOC_TUNED = keep_freed_memory()
import theano  # noqa: E402
_install_downsample_shim()
import lasagne  # noqa: E402

# Always this package's BatchNormLayer: it is master's, plus the fused
# CPU op of `fastbn` in training mode.
from .backport import BatchNormLayer, batch_norm  # noqa: F401,E402
if hasattr(lasagne.layers, 'TransposedConv2DLayer'):
    from lasagne.layers import (  # noqa: F401
        TransposedConv2DLayer, Conv2DLayer)
else:
    from .backport import TransposedConv2DLayer, Conv2DLayer  # noqa: F401
