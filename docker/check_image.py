"""Build-time self-check of the Docker image; needs no GPU.

The Dockerfile runs it after copying the project in, so that a build that
would give a broken image fails instead:

- every package requirements.txt pins is installed at exactly that version,
  and `import numpy` finds requirements.txt's numpy (not the newer one that
  Debian's python3-pygpu pulls in, which Theano 1.0.5 cannot import with);
- Theano and Lasagne import through gcm_lasagne, with float32;
- GPU variants: pygpu is 0.7.x with the C API version Theano 1.0.5 needs;
  libnvrtc.so and libcublas.so load under the names libgpuarray dlopen()s;
  NVRTC is the expected version and compiles a kernel, with the options
  libgpuarray passes, for the newest architecture the variant is meant for;
- cuda10: libcudnn.so is cuDNN 7.6.5 and Theano's own cuDNN test program
  compiles and links against it.

    python docker/check_image.py [--variant cpu|cuda11|cuda10]

The variant defaults to $GCM_IMAGE_VARIANT (set by the Dockerfile).
"""
import argparse
import atexit
import ctypes
import importlib.metadata
import os
import re
import shutil
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # gcm_lasagne, wherever this is run from

# What each variant must provide. `arch` is the newest compute capability
# the variant claims (docs/gpu.md), as libgpuarray names it.
VARIANTS = {
    'cpu': None,
    'cuda11': {'nvrtc': (11, 8), 'arch': 'compute_90', 'cudnn': None},
    'cuda10': {'nvrtc': (10, 2), 'arch': 'compute_75', 'cudnn': 7605},
}

PIN = re.compile(r'^([A-Za-z0-9_.\-]+)==([^\s;#]+)')


def read_pins(path):
    """{name: version} of the `name==version` lines of a requirements file."""
    pins = {}
    with open(path) as f:
        for line in f:
            m = PIN.match(line.strip())
            if m:
                pins[m.group(1)] = m.group(2)
    return pins


def fail(message):
    sys.stderr.write('check_image: FAILED: %s\n' % message)
    sys.exit(1)


def check_pins(pins):
    for name, version in sorted(pins.items()):
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            fail('%s is not installed (requirements.txt pins %s)'
                 % (name, version))
        if installed != version:
            fail('%s %s is installed, requirements.txt pins %s'
                 % (name, installed, version))
    import numpy
    if numpy.__version__ != pins.get('numpy', numpy.__version__):
        fail('import numpy gives %s from %s, requirements.txt pins %s'
             % (numpy.__version__, numpy.__file__, pins['numpy']))
    print('pins: %d packages as in requirements.txt; numpy %s from %s'
          % (len(pins), numpy.__version__, os.path.dirname(numpy.__file__)))


def cpu_only_theano_flags(flags):
    """The image's THEANO_FLAGS with device=cpu: no GPU at build time."""
    items = [i for i in flags.split(',')
             if i and not i.startswith(('device=', 'base_compiledir='))]
    return ','.join(['device=cpu'] + items)


def check_theano(cache_dir):
    os.environ['THEANO_FLAGS'] = cpu_only_theano_flags(
        os.environ.get('THEANO_FLAGS', '')) + ',base_compiledir=' + cache_dir
    import gcm_lasagne  # noqa: F401  (configures Theano)
    import lasagne
    import theano
    import theano.tensor as T
    f = theano.function([], T.constant(2, dtype='float32') * 3)
    if float(f()) != 6.0 or theano.config.floatX != 'float32':
        fail('Theano does not compute in float32')
    print('theano %s, lasagne %s, floatX %s, blas.ldflags %r'
          % (theano.__version__, lasagne.__version__, theano.config.floatX,
             theano.config.blas.ldflags))


def check_pygpu():
    try:
        import pygpu
        import pygpu.gpuarray
    except ImportError as e:
        fail('pygpu does not import: %s' % e)
    api = pygpu.gpuarray.api_version()
    if not pygpu.__version__.startswith('0.7.') or api[0] != 2:
        fail('pygpu %s with C API %s; Theano 1.0.5 needs 0.7.x with API 2'
             % (pygpu.__version__, api))
    print('pygpu %s (C API %s) from %s'
          % (pygpu.__version__, api, os.path.dirname(pygpu.__file__)))


def load(name):
    try:
        return ctypes.CDLL(name)
    except OSError as e:
        fail('%s does not load: %s' % (name, e))


KERNEL = b'extern "C" __global__ void twice(float *x) { x[threadIdx.x] *= 2; }'


def check_nvrtc(version, arch):
    nvrtc = load('libnvrtc.so')
    major, minor = ctypes.c_int(), ctypes.c_int()
    nvrtc.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
    if (major.value, minor.value) != version:
        fail('NVRTC is %d.%d, this variant needs %d.%d'
             % ((major.value, minor.value) + version))
    prog = ctypes.c_void_p()
    if nvrtc.nvrtcCreateProgram(ctypes.byref(prog), KERNEL, b'twice.cu',
                                0, None, None):
        fail('nvrtcCreateProgram failed')
    # libgpuarray passes the architecture as two options: "-arch", "compute_XY"
    opts = (ctypes.c_char_p * 2)(b'-arch', arch.encode())
    status = nvrtc.nvrtcCompileProgram(prog, 2, opts)
    size = ctypes.c_size_t()
    nvrtc.nvrtcGetPTXSize(prog, ctypes.byref(size))
    ptx = ctypes.create_string_buffer(size.value)
    nvrtc.nvrtcGetPTX(prog, ptx)
    nvrtc.nvrtcDestroyProgram(ctypes.byref(prog))
    target = arch.replace('compute_', 'sm_').encode()
    if status != 0 or b'.target ' + target not in ptx.value:
        fail('NVRTC %d.%d cannot compile for %s (status %d)'
             % (major.value, minor.value, arch, status))
    print('NVRTC %d.%d compiles for %s' % (major.value, minor.value, arch))


def check_cublas():
    cublas = load('libcublas.so')
    for symbol in ('cublasCreate_v2', 'cublasSgemm_v2', 'cublasSgemmBatched'):
        if not hasattr(cublas, symbol):
            fail('libcublas.so lacks %s, which libgpuarray needs' % symbol)
    print('libcublas.so loads and has the symbols libgpuarray uses')


def check_cudnn(expected):
    import theano
    from theano.gpuarray import dnn
    lib = load(os.path.join(theano.config.dnn.library_path, 'libcudnn.so'))
    lib.cudnnGetVersion.restype = ctypes.c_size_t
    version = lib.cudnnGetVersion()
    if version != expected:
        fail('cuDNN is %d, this variant needs %d' % (version, expected))
    ok, message = dnn._dnn_check_compile()
    if not ok:
        fail("Theano's cuDNN test program does not build: %s" % message)
    print("cuDNN %d; Theano's cuDNN test program builds" % version)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--variant', choices=sorted(VARIANTS),
                        default=os.environ.get('GCM_IMAGE_VARIANT', 'cpu'))
    args = parser.parse_args(argv)
    expect = VARIANTS[args.variant]

    check_pins(read_pins(os.path.join(ROOT, 'requirements.txt')))
    if expect:
        check_pygpu()
    # Theano's cache stays out of the image (the image's cache directory
    # must be created by whoever runs the container). Registered before
    # Theano is imported, so it runs after Theano's own exit handler.
    cache_dir = tempfile.mkdtemp(prefix='theano-check-')
    atexit.register(shutil.rmtree, cache_dir, True)
    check_theano(cache_dir)
    if expect:
        check_nvrtc(expect['nvrtc'], expect['arch'])
        check_cublas()
        if expect['cudnn']:
            check_cudnn(expect['cudnn'])
    print('check_image: %s variant OK' % args.variant)
    return 0


if __name__ == '__main__':
    sys.exit(main())
