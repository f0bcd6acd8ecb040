"""Faster CPU convolutions: our own replacements for Theano's `CorrMM`,
`CorrMM_gradWeights` and `CorrMM_gradInputs`.

Theano's CPU convolution unrolls every image with a Caffe-style im2col (an
index computation and a branch per element) and multiplies with BLAS; on
GCM's layers the im2col costs as much as the product, and the products with
16 or 10 output channels run at half the speed of the wider ones. The ops
here (C in c_code/fastconv.c) copy each image once into zero-padded planes
and read the filter taps straight from them with small vector kernels that
keep their sums in registers: no im2col buffer, and no BLAS call (for these
shapes the kernels measured faster than OpenBLAS's sgemm alone). Images are
split over OpenMP threads.

Importing this module registers the graph optimizer 'gcm_fastconv' (CPU,
fast_run), which swaps each supported CorrMM* node of a compiled graph for
the op here with the same semantics: float32, groups=1, no dilation,
unshared=False, border modes 'valid', 'half', 'full' or explicit paddings,
any subsample. Anything else stays Theano's. `mode.excluding('gcm_fastconv')`
turns it off for one function; GCM_FASTCONV=0 in the environment keeps it
from being registered at all.

Results equal CorrMM's up to float32 rounding (sums in another order). One
difference: the weight gradient of layers with few output channels sums
over a padded pixel grid whose extra pixels have a zero output gradient, so
an inf or nan in the input can make a nan where CorrMM stays finite.
"""
import functools
import os
import zlib

import numpy as np
import theano
import theano.tensor as T
from theano import gof
from theano.gof import Apply, OpenMPOp, ParamsType
from theano.gradient import DisconnectedType
from theano.scalar import int64
from theano.tensor.nnet.corr import (CorrMM, CorrMM_gradInputs,
                                     CorrMM_gradWeights)

_C_FILES = [os.path.join(os.path.dirname(os.path.abspath(__file__)), 'c_code',
                         name) for name in ('fastconv.c', 'winograd.c')]


@functools.lru_cache(maxsize=None)
def _c_source():
    """The C files, read when an op is first compiled (not on import)."""
    text = []
    for path in _C_FILES:
        with open(path) as f:
            text.append(f.read())
    return '\n'.join(text)


def winograd_enabled():
    """Winograd F(2x2, 3x3) for the stride-1 3x3 layers where it measured
    faster (c_code/winograd.c), unless GCM_WINOGRAD=0 in the environment
    when an op is compiled."""
    return os.environ.get('GCM_WINOGRAD', '1').strip() != '0'

# Macros put in front of the C source, e.g. {'FC_VL': 8} to build the
# 8-float-vector code of an AVX2 machine on this one (tests/test_fastconv.py).
# Not for normal use: the fastest width is chosen from the compiler's target.
_C_DEFINES = {}


def normalize_border_mode(border_mode):
    """CorrMM's border_mode as 'valid', 'full', 'half' or
    ((top, bottom), (left, right)); ValueError if it is none of those."""
    if isinstance(border_mode, str):
        if border_mode not in ('valid', 'full', 'half'):
            raise ValueError('invalid border_mode %r' % (border_mode,))
        return border_mode
    if isinstance(border_mode, (int, np.integer)):
        border_mode = (border_mode, border_mode)
    if not isinstance(border_mode, (tuple, list)) or len(border_mode) != 2:
        raise ValueError('invalid border_mode %r' % (border_mode,))
    pads = []
    for side in border_mode:
        if isinstance(side, (tuple, list)):
            if len(side) != 2:
                raise ValueError('invalid border_mode %r' % (border_mode,))
            pair = (int(side[0]), int(side[1]))
        else:
            pair = (int(side), int(side))
        if min(pair) < 0:
            raise ValueError('invalid border_mode %r' % (border_mode,))
        pads.append(pair)
    return tuple(pads)


def _pads(border_mode, kh, kw):
    """((top, bottom), (left, right)) for kernel size kh x kw (ints or
    symbolic)."""
    if border_mode == 'half':
        return (kh // 2, kh // 2), (kw // 2, kw // 2)
    if border_mode == 'full':
        return (kh - 1, kh - 1), (kw - 1, kw - 1)
    if border_mode == 'valid':
        return (0, 0), (0, 0)
    return border_mode


_TEMPLATE_PARAMS = """
    const npy_intp fc_mode_t = %(params)s->padH_l;
    const npy_intp fc_mode_b = %(params)s->padH_r;
    const npy_intp fc_mode_l = %(params)s->padW_l;
    const npy_intp fc_mode_r = %(params)s->padW_r;
    const int fc_dH = (int)%(params)s->dH, fc_dW = (int)%(params)s->dW;
"""

_TEMPLATE_ALLOC = """
    if (fc_ok) {
        npy_intp fc_odims[4] = {%(odims)s};
        if (!(%(out)s && PyArray_NDIM(%(out)s) == 4
              && PyArray_IS_C_CONTIGUOUS(%(out)s)
              && PyArray_TYPE(%(out)s) == NPY_FLOAT32
              && PyArray_DIMS(%(out)s)[0] == fc_odims[0]
              && PyArray_DIMS(%(out)s)[1] == fc_odims[1]
              && PyArray_DIMS(%(out)s)[2] == fc_odims[2]
              && PyArray_DIMS(%(out)s)[3] == fc_odims[3])) {
            Py_XDECREF(%(out)s);
            %(out)s = (PyArrayObject*)PyArray_EMPTY(4, fc_odims,
                                                    NPY_FLOAT32, 0);
            if (!%(out)s)
                fc_ok = 0;
        }
    }
"""

_TEMPLATE_CHECK_INPUTS = """
    if (PyArray_NDIM(%(a)s) != 4 || PyArray_NDIM(%(b)s) != 4
            || PyArray_TYPE(%(a)s) != NPY_FLOAT32
            || PyArray_TYPE(%(b)s) != NPY_FLOAT32) {
        PyErr_SetString(PyExc_TypeError,
                        "%(name)s: need two 4-d float32 arrays");
        fc_ok = 0;
    }
    if (fc_ok) {
        fc_a = PyArray_GETCONTIGUOUS(%(a)s);
        fc_b = PyArray_GETCONTIGUOUS(%(b)s);
        fc_ok = fc_a && fc_b;
    }
"""

_TEMPLATE_RUN = """
    if (fc_ok && PyArray_SIZE(%(out)s) > 0) {
        if (%(empty)s) {
            PyArray_FILLWBYTE(%(out)s, 0);
        } else if (%(call)s != 0) {
            PyErr_NoMemory();
            fc_ok = 0;
        }
    }
    Py_XDECREF(fc_a);
    Py_XDECREF(fc_b);
    Py_XDECREF(fc_c);
    if (!fc_ok) {
        %(fail)s
    }
"""

_TEMPLATE_START = """
{
    int fc_ok = 1;
    PyArrayObject *fc_a = NULL, *fc_b = NULL, *fc_c = NULL;
    fc_epi fc_e = {NULL, 0};  /* what follows the convolution (convfuse.py) */
    npy_intp B = 0, C = 0, H = 0, W = 0, M = 0, kh = 0, kw = 0;
    npy_intp pt = 0, pb = 0, pl = 0, pr = 0, Ho = 0, Wo = 0;
"""


def _op_code(name, a, b, sizes, out, odims, empty, function,
             epilogue=False):
    """The C code of one op: make the 4-d float32 inputs a and b contiguous
    (fc_a, fc_b); `sizes` sets B, C, H, W, M, kh, kw, the paddings and Ho,
    Wo from them and checks them; allocate `out` (odims) and call
    `function`, or zero `out` when `empty` (nothing to sum). With
    `epilogue`, the op's `%(epilogue)s` code may set fc_e, which `function`
    applies to each image's output."""
    call = ('%s((const float*)PyArray_DATA(fc_a), '
            '(const float*)PyArray_DATA(fc_b), (float*)PyArray_DATA(%s), '
            'B, C, H, W, M, kh, kw, fc_dH, fc_dW, pt, pl, Ho, Wo%s)'
            % (function, out, ', &fc_e' if epilogue else ''))
    return (_TEMPLATE_START + _TEMPLATE_PARAMS
            + _TEMPLATE_CHECK_INPUTS % dict(a=a, b=b, name=name)
            + '    if (fc_ok) {\n' + sizes + '    }\n'
            + ('%(epilogue)s' if epilogue else '')
            + _TEMPLATE_ALLOC % dict(out=out, odims=odims)
            + _TEMPLATE_RUN % dict(out=out, fail='%(fail)s', empty=empty,
                                   call=call)
            + '}\n')


# a, b: images, filters
_FORWARD = _op_code(
    'FastCorrMM', '%(img)s', '%(kern)s', """\
        B = PyArray_DIMS(fc_a)[0]; C = PyArray_DIMS(fc_a)[1];
        H = PyArray_DIMS(fc_a)[2]; W = PyArray_DIMS(fc_a)[3];
        M = PyArray_DIMS(fc_b)[0]; kh = PyArray_DIMS(fc_b)[2];
        kw = PyArray_DIMS(fc_b)[3];
        pt = fc_pad(fc_mode_t, kh); pb = fc_pad(fc_mode_b, kh);
        pl = fc_pad(fc_mode_l, kw); pr = fc_pad(fc_mode_r, kw);
        Ho = fc_floordiv(H + pt + pb - kh, fc_dH) + 1;
        Wo = fc_floordiv(W + pl + pr - kw, fc_dW) + 1;
        if (PyArray_DIMS(fc_b)[1] != C) {
            PyErr_Format(PyExc_ValueError,
                "FastCorrMM: images have %%ld channels, filters %%ld",
                (long)C, (long)PyArray_DIMS(fc_b)[1]);
            fc_ok = 0;
        } else if (Ho <= 0 || Wo <= 0) {
            PyErr_Format(PyExc_ValueError,
                "FastCorrMM: impossible output shape: images %%ldx%%ld, "
                "filters %%ldx%%ld", (long)H, (long)W, (long)kh, (long)kw);
            fc_ok = 0;
        }
""",
    '%(top)s', 'B, M, Ho, Wo', 'C * kh * kw == 0', 'fc_forward', True)

# a, b: images, output gradient
_GRADWEIGHTS = _op_code(
    'FastCorrMM_gradWeights', '%(img)s', '%(topgrad)s', """\
        B = PyArray_DIMS(fc_a)[0]; C = PyArray_DIMS(fc_a)[1];
        H = PyArray_DIMS(fc_a)[2]; W = PyArray_DIMS(fc_a)[3];
        M = PyArray_DIMS(fc_b)[1]; Ho = PyArray_DIMS(fc_b)[2];
        Wo = PyArray_DIMS(fc_b)[3];
        /* filter size: given, else the one that makes the shapes fit */
        kh = %(kh)s;
        if (kh < 0)
            kh = (fc_mode_t == -2) ? Ho - H + 1
                 : H + fc_mode_t + fc_mode_b - (Ho - 1) * fc_dH;
        kw = %(kw)s;
        if (kw < 0)
            kw = (fc_mode_l == -2) ? Wo - W + 1
                 : W + fc_mode_l + fc_mode_r - (Wo - 1) * fc_dW;
        pt = fc_pad(fc_mode_t, kh); pb = fc_pad(fc_mode_b, kh);
        pl = fc_pad(fc_mode_l, kw); pr = fc_pad(fc_mode_r, kw);
        if (kh <= 0 || kw <= 0 || PyArray_DIMS(fc_b)[0] != B
                || Ho != fc_floordiv(H + pt + pb - kh, fc_dH) + 1
                || Wo != fc_floordiv(W + pl + pr - kw, fc_dW) + 1) {
            PyErr_Format(PyExc_ValueError,
                "FastCorrMM_gradWeights: shape inconsistency: images "
                "%%ld x %%ld x %%ld x %%ld, output gradient "
                "%%ld x %%ld x %%ld x %%ld, filters %%ld x %%ld",
                (long)B, (long)C, (long)H, (long)W,
                (long)PyArray_DIMS(fc_b)[0], (long)M, (long)Ho, (long)Wo,
                (long)kh, (long)kw);
            fc_ok = 0;
        }
""",
    '%(weights)s', 'M, C, kh, kw', 'B * Ho * Wo == 0', 'fc_gradweights')

# a, b: filters, output gradient
_GRADINPUTS = _op_code(
    'FastCorrMM_gradInputs', '%(kern)s', '%(topgrad)s', """\
        M = PyArray_DIMS(fc_a)[0]; C = PyArray_DIMS(fc_a)[1];
        kh = PyArray_DIMS(fc_a)[2]; kw = PyArray_DIMS(fc_a)[3];
        B = PyArray_DIMS(fc_b)[0]; Ho = PyArray_DIMS(fc_b)[2];
        Wo = PyArray_DIMS(fc_b)[3];
        pt = fc_pad(fc_mode_t, kh); pb = fc_pad(fc_mode_b, kh);
        pl = fc_pad(fc_mode_l, kw); pr = fc_pad(fc_mode_r, kw);
        /* input size: given, else the smallest that gives this output */
        H = %(height)s;
        if (H < 0)
            H = (Ho - 1) * fc_dH + kh - pt - pb;
        W = %(width)s;
        if (W < 0)
            W = (Wo - 1) * fc_dW + kw - pl - pr;
        if (H <= 0 || W <= 0 || PyArray_DIMS(fc_b)[1] != M
                || Ho != fc_floordiv(H + pt + pb - kh, fc_dH) + 1
                || Wo != fc_floordiv(W + pl + pr - kw, fc_dW) + 1) {
            PyErr_Format(PyExc_ValueError,
                "FastCorrMM_gradInputs: shape inconsistency: filters "
                "%%ld x %%ld x %%ld x %%ld, output gradient "
                "%%ld x %%ld x %%ld x %%ld, inputs %%ld x %%ld",
                (long)M, (long)C, (long)kh, (long)kw,
                (long)B, (long)PyArray_DIMS(fc_b)[1], (long)Ho, (long)Wo,
                (long)H, (long)W);
            fc_ok = 0;
        }
""",
    '%(bottom)s', 'B, C, H, W', 'M * kh * kw == 0', 'fc_gradinputs', True)

def _version():
    """Theano reuses a compiled op by this version: derived from the code."""
    return (1, zlib.crc32(
        (_c_source() + _FORWARD + _GRADWEIGHTS + _GRADINPUTS).encode()))


def _size_inputs(shape):
    """The two int64 size inputs of the gradient ops: the given (rows,
    columns), or constants -1 for 'infer it from the other shapes' (always
    two inputs, so that every node of an op shares one compiled module)."""
    if shape is None:
        return [T.constant(-1, dtype='int64'), T.constant(-1, dtype='int64')]
    return [T.constant(int(size), dtype='int64')
            if isinstance(size, (int, np.integer)) else
            T.as_tensor_variable(size).astype('int64')
            for size in (shape[0], shape[1])]


def _given_sizes(node):
    """The size inputs of a gradient node, or None if they are the -1
    constants of 'not given'."""
    sizes = node.inputs[2:4]
    if all(isinstance(v, T.TensorConstant) and int(v.data) == -1
           for v in sizes):
        return None
    return tuple(sizes)


def _given_values(sizes):
    """The same at run time (Op.perform): the given sizes, or None."""
    given = tuple(int(v) for v in sizes)
    return None if given == (-1, -1) else given


class _FastCorrBase(OpenMPOp):
    """Shared by the three ops: the props, C parameters and compilation.

    border_mode and subsample mean what they mean for CorrMM; padding
    -1 is 'half' and -2 'full' in the C parameters, resolved there from the
    filter size, as CorrMM does."""
    __props__ = ('border_mode', 'subsample')
    check_broadcast = False
    params_type = ParamsType(padH_l=int64, padH_r=int64, padW_l=int64,
                             padW_r=int64, dH=int64, dW=int64)
    _op_define = None

    def __init__(self, border_mode='valid', subsample=(1, 1), openmp=None):
        super().__init__(openmp=openmp)
        self.border_mode = normalize_border_mode(border_mode)
        subsample = tuple(int(s) for s in subsample)
        if len(subsample) != 2 or min(subsample) < 1:
            raise ValueError('subsample must be two positive integers, got %r'
                             % (subsample,))
        self.subsample = subsample

    def _c_pads(self):
        mode = self.border_mode
        if mode == 'half':
            return (-1, -1), (-1, -1)
        if mode == 'full':
            return (-2, -2), (-2, -2)
        if mode == 'valid':
            return (0, 0), (0, 0)
        return mode

    padH_l = property(lambda self: self._c_pads()[0][0])
    padH_r = property(lambda self: self._c_pads()[0][1])
    padW_l = property(lambda self: self._c_pads()[1][0])
    padW_r = property(lambda self: self._c_pads()[1][1])
    dH = property(lambda self: self.subsample[0])
    dW = property(lambda self: self.subsample[1])

    def __str__(self):
        return '%s{%s, %s}' % (type(self).__name__, self.border_mode,
                               self.subsample)

    @staticmethod
    def _float32_4d(*variables):
        out = []
        for var in variables:
            var = T.as_tensor_variable(var)
            if var.ndim != 4 or var.dtype != 'float32':
                raise TypeError('fastconv ops need 4-d float32 tensors, got %s'
                                % (var.type,))
            out.append(var)
        return out

    def c_support_code(self):
        defines = dict(_C_DEFINES, **{self._op_define: 1,
                                      'FC_WINOGRAD': int(winograd_enabled())})
        return ''.join('#define %s %s\n' % item
                       for item in sorted(defines.items())) + _c_source()

    def c_code_cache_version(self):
        return _version() + (bool(self.openmp), winograd_enabled(),
                             tuple(sorted(_C_DEFINES.items())))

    @staticmethod
    def _size_code(name):
        return '((npy_intp)*(npy_int64*)PyArray_DATA(%s))' % name

    def _epilogue_code(self, inputs, sub):
        """C code that sets fc_e (convfuse.py): none here."""
        return ''


class FastCorrMM(_FastCorrBase):
    """CorrMM (img, kern) -> correlation, computed by fc_forward."""
    _op_define = 'FC_OP_FORWARD'

    def make_node(self, img, kern):
        img, kern = self._float32_4d(img, kern)
        broadcastable = [img.type.broadcastable[0],
                         kern.type.broadcastable[0], False, False]
        return Apply(self, [img, kern],
                     [T.TensorType('float32', broadcastable)()])

    def infer_shape(self, node, input_shapes):
        (b, _, h, w), (m, _, kh, kw) = input_shapes
        (pt, pb), (pl, pr) = _pads(self.border_mode, kh, kw)
        dh, dw = self.subsample
        return [(b, m, (h + pt + pb - kh) // dh + 1,
                 (w + pl + pr - kw) // dw + 1)]

    def perform(self, node, inputs, outputs, params=None):
        img, kern = inputs
        outputs[0][0] = _np_forward(img, kern, self.border_mode,
                                    self.subsample)

    def c_code(self, node, name, inputs, outputs, sub):
        img, kern = inputs[:2]
        top, = outputs
        return _FORWARD % dict(img=img, kern=kern, top=top, fail=sub['fail'],
                               params=sub['params'],
                               epilogue=self._epilogue_code(inputs, sub))

    def grad(self, inputs, output_grads):
        img, kern = inputs
        top, = output_grads
        d_img = FastCorrMM_gradInputs(self.border_mode, self.subsample)(
            kern, top, img.shape[-2:])
        d_kern = FastCorrMM_gradWeights(self.border_mode, self.subsample)(
            img, top, kern.shape[-2:])
        return [d_img, d_kern]


class FastCorrMM_gradWeights(_FastCorrBase):
    """CorrMM_gradWeights (img, topgrad[, (kh, kw)]) -> filter gradient,
    computed by fc_gradweights."""
    _op_define = 'FC_OP_GRADWEIGHTS'

    def make_node(self, img, topgrad, shape=None):
        img, topgrad = self._float32_4d(img, topgrad)
        if shape is None:
            if self.subsample != (1, 1) or self.border_mode == 'half':
                raise ValueError('shape must be given if subsample != (1, 1)'
                                 " or border_mode == 'half'")
        broadcastable = [topgrad.type.broadcastable[1],
                         img.type.broadcastable[1], False, False]
        return Apply(self, [img, topgrad] + _size_inputs(shape),
                     [T.TensorType('float32', broadcastable)()])

    def _filter_size(self, h, w, ho, wo, given):
        if given is not None:
            return given
        dh, dw = self.subsample
        mode = self.border_mode
        if mode == 'full':
            return ho - h + 1, wo - w + 1
        (pt, pb), (pl, pr) = _pads(mode, 0, 0)
        return h + pt + pb - (ho - 1) * dh, w + pl + pr - (wo - 1) * dw

    def infer_shape(self, node, input_shapes):
        (_, c, h, w), (_, m, ho, wo) = input_shapes[:2]
        kh, kw = self._filter_size(h, w, ho, wo, _given_sizes(node))
        return [(m, c, kh, kw)]

    def perform(self, node, inputs, outputs, params=None):
        img, topgrad = inputs[:2]
        kh, kw = self._filter_size(img.shape[2], img.shape[3],
                                   topgrad.shape[2], topgrad.shape[3],
                                   _given_values(inputs[2:]))
        outputs[0][0] = _np_gradweights(img, topgrad, (kh, kw),
                                        self.border_mode, self.subsample)

    def c_code(self, node, name, inputs, outputs, sub):
        img, topgrad = inputs[:2]
        weights, = outputs
        return _GRADWEIGHTS % dict(
            img=img, topgrad=topgrad, weights=weights, fail=sub['fail'],
            params=sub['params'],
            kh=self._size_code(inputs[2]), kw=self._size_code(inputs[3]))

    def grad(self, inputs, output_grads):
        img, topgrad = inputs[:2]
        weights, = output_grads
        d_img = FastCorrMM_gradInputs(self.border_mode, self.subsample)(
            weights, topgrad, img.shape[-2:])
        d_top = FastCorrMM(self.border_mode, self.subsample)(img, weights)
        return (d_img, d_top) + (DisconnectedType()(),) * 2

    def connection_pattern(self, node):
        return [[1], [1], [0], [0]]  # not to the sizes


class FastCorrMM_gradInputs(_FastCorrBase):
    """CorrMM_gradInputs (kern, topgrad[, (h, w)]) -> input gradient,
    computed by fc_gradinputs."""
    _op_define = 'FC_OP_GRADINPUTS'

    def make_node(self, kern, topgrad, shape=None):
        kern, topgrad = self._float32_4d(kern, topgrad)
        if shape is None and self.subsample != (1, 1):
            raise ValueError('shape must be given if subsample != (1, 1)')
        broadcastable = [topgrad.type.broadcastable[0],
                         kern.type.broadcastable[1], False, False]
        return Apply(self, [kern, topgrad] + _size_inputs(shape),
                     [T.TensorType('float32', broadcastable)()])

    def _input_size(self, kh, kw, ho, wo, given):
        if given is not None:
            return given
        (pt, pb), (pl, pr) = _pads(self.border_mode, kh, kw)
        dh, dw = self.subsample
        return (ho - 1) * dh + kh - pt - pb, (wo - 1) * dw + kw - pl - pr

    def infer_shape(self, node, input_shapes):
        (_, c, kh, kw), (b, _, ho, wo) = input_shapes[:2]
        h, w = self._input_size(kh, kw, ho, wo, _given_sizes(node))
        return [(b, c, h, w)]

    def perform(self, node, inputs, outputs, params=None):
        kern, topgrad = inputs[:2]
        h, w = self._input_size(kern.shape[2], kern.shape[3],
                                topgrad.shape[2], topgrad.shape[3],
                                _given_values(inputs[2:]))
        outputs[0][0] = _np_gradinputs(kern, topgrad, (h, w),
                                       self.border_mode, self.subsample)

    def c_code(self, node, name, inputs, outputs, sub):
        kern, topgrad = inputs[:2]
        bottom, = outputs
        return _GRADINPUTS % dict(
            kern=kern, topgrad=topgrad, bottom=bottom, fail=sub['fail'],
            params=sub['params'],
            height=self._size_code(inputs[2]),
            width=self._size_code(inputs[3]),
            epilogue=self._epilogue_code(inputs, sub))

    def grad(self, inputs, output_grads):
        kern, topgrad = inputs[:2]
        bottom, = output_grads
        d_kern = FastCorrMM_gradWeights(self.border_mode, self.subsample)(
            bottom, topgrad, kern.shape[-2:])
        d_top = FastCorrMM(self.border_mode, self.subsample)(bottom, kern)
        return (d_kern, d_top) + (DisconnectedType()(),) * 2

    def connection_pattern(self, node):
        return [[1], [1], [0], [0]]  # not to the sizes


# numpy versions (Op.perform: used where Theano cannot compile C)

def _np_windows(kh, kw, subsample, out_hw):
    """For each tap (i, j), the slices of the padded image it reads."""
    ho, wo = out_hw
    dh, dw = subsample
    for i in range(kh):
        for j in range(kw):
            yield i, j, (slice(None), slice(None),
                         slice(i, i + dh * (ho - 1) + 1, dh),
                         slice(j, j + dw * (wo - 1) + 1, dw))


def _np_padded(x, pads):
    (pt, pb), (pl, pr) = pads
    return np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))


def _np_out_size(h, w, kh, kw, pads, subsample):
    (pt, pb), (pl, pr) = pads
    ho = (h + pt + pb - kh) // subsample[0] + 1
    wo = (w + pl + pr - kw) // subsample[1] + 1
    if ho <= 0 or wo <= 0:
        raise ValueError('fastconv: impossible output shape')
    return ho, wo


def _np_forward(img, kern, border_mode, subsample):
    kh, kw = kern.shape[2:]
    pads = _pads(border_mode, kh, kw)
    ho, wo = _np_out_size(img.shape[2], img.shape[3], kh, kw, pads, subsample)
    xp = _np_padded(img, pads)
    out = np.zeros((img.shape[0], kern.shape[0], ho, wo), 'float32')
    for i, j, sl in _np_windows(kh, kw, subsample, (ho, wo)):
        out += np.einsum('bchw,mc->bmhw', xp[sl], kern[:, :, i, j])
    return out


def _np_gradweights(img, topgrad, kshape, border_mode, subsample):
    kh, kw = kshape
    pads = _pads(border_mode, kh, kw)
    ho, wo = topgrad.shape[2:]
    if (ho, wo) != _np_out_size(img.shape[2], img.shape[3], kh, kw, pads,
                                subsample):
        raise ValueError('FastCorrMM_gradWeights: shape inconsistency')
    xp = _np_padded(img, pads)
    out = np.zeros((topgrad.shape[1], img.shape[1], kh, kw), 'float32')
    for i, j, sl in _np_windows(kh, kw, subsample, (ho, wo)):
        out[:, :, i, j] = np.einsum('bchw,bmhw->mc', xp[sl], topgrad)
    return out


def _np_gradinputs(kern, topgrad, ishape, border_mode, subsample):
    kh, kw = kern.shape[2:]
    h, w = ishape
    pads = _pads(border_mode, kh, kw)
    ho, wo = topgrad.shape[2:]
    if (ho, wo) != _np_out_size(h, w, kh, kw, pads, subsample):
        raise ValueError('FastCorrMM_gradInputs: shape inconsistency')
    (pt, pb), (pl, pr) = pads
    xp = np.zeros((topgrad.shape[0], kern.shape[1], h + pt + pb,
                   w + pl + pr), 'float32')
    for i, j, sl in _np_windows(kh, kw, subsample, (ho, wo)):
        xp[sl] += np.einsum('bmhw,mc->bchw', topgrad, kern[:, :, i, j])
    return np.ascontiguousarray(xp[:, :, pt:pt + h, pl:pl + w])


# The graph optimizer

_REPLACEMENTS = {
    CorrMM: FastCorrMM,
    CorrMM_gradWeights: FastCorrMM_gradWeights,
    CorrMM_gradInputs: FastCorrMM_gradInputs,
}


def supported(op):
    """Whether a CorrMM* op has a fastconv replacement."""
    if type(op) not in _REPLACEMENTS:
        return False
    if (op.num_groups != 1 or op.unshared
            or tuple(op.filter_dilation) != (1, 1)):
        return False
    try:
        normalize_border_mode(op.border_mode)
    except ValueError:
        return False
    return min(op.subsample) >= 1


@gof.local_optimizer(list(_REPLACEMENTS))
def local_gcm_fastconv(node):
    """CorrMM* -> FastCorrMM* for float32 CPU tensors."""
    if not supported(node.op) or not theano.config.cxx:
        return None
    first, second = node.inputs[:2]
    for var in (first, second):
        if not isinstance(var.type, T.TensorType) or var.dtype != 'float32':
            return None
    op = _REPLACEMENTS[type(node.op)](node.op.border_mode, node.op.subsample)
    if len(node.inputs) == 4:
        new = op(first, second, node.inputs[2:])
    else:
        new = op(first, second)
    if new.type != node.outputs[0].type:
        return None
    gof.opt.copy_stack_trace(node.outputs[0], new)
    return [new]


OPTIMIZER_NAME = 'gcm_fastconv'


def enabled_by_environment():
    return os.environ.get('GCM_FASTCONV', '1').strip() != '0'


def register_optimizer(name, local_optimizer, position):
    """Put a local optimizer into Theano's optdb (fast_run) at `position`.
    Idempotent."""
    if name not in theano.compile.optdb.__db__:
        theano.compile.optdb.register(
            name, gof.opt.in2out(local_optimizer, name=name), position,
            'fast_run')


def register():
    """After the pass that makes CorrMM nodes (48.6), before the destroy
    handler and the in-place optimizations."""
    register_optimizer(OPTIMIZER_NAME, local_gcm_fastconv, 48.8)


if enabled_by_environment():
    register()
