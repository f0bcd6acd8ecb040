"""Batch normalization (and the ReLU after it) as compiled CPU ops: training
mode forward and backward, and inference.

Written as Theano expressions, a training-mode BN layer costs about a dozen
passes over its (batch, channels, rows, cols) tensor: the mean, the
variance, the normalization, and as many again for the gradient, with the
reductions (`Sum{axis=[0, 2, 3]}`) on one core. On GCM that was 45% of a
training step (docs/performance.md). These ops do the same arithmetic in
three passes forward and two backward, one channel per OpenMP thread, and
take the ReLU that follows a BN layer in with them (`with_rectify`).

The maths is Lasagne's, with the biased variance:
    mean = x.mean((0, 2, 3)),  inv_std = 1 / sqrt(x.var((0, 2, 3)) + eps)
    y = (x - mean) * (gamma * inv_std) + beta
and the gradient is the usual closed form
    dx = gamma * inv_std * (dy - mean(dy) - xhat * mean(dy * xhat)).
Sums are taken in float32 within a row of the image and in float64 across
rows, so results equal the plain expression up to float32 rounding
(tests/test_fastbn.py). `BatchNormLayer` uses them on the CPU only; on a GPU
the plain expression stays, for Theano's GPU kernels.

`BiasAdd` is what is left of an inference-mode BN once it is folded into
the convolution before it (inference.py): a per-channel bias and the ReLU,
in one pass. Theano's own fused elementwise op for the same `relu(x + b)`
measured 7-9x slower (1.5 against 0.2 ms on 128x16x32x32, 2 threads): its
loop does not vectorise over a broadcast bias.
"""
import zlib

import numpy as np
import theano
import theano.tensor as T
from theano.gof import Apply, OpenMPOp
from theano.gradient import DisconnectedType


def available():
    """Whether the fused op should be used: a C compiler (the ops have no
    fast Python path) and a CPU device."""
    device = theano.config.device
    return bool(theano.config.cxx) and not device.startswith(('cuda', 'gpu'))


_SUPPORT = """
/* Writes a C-contiguous float32 array of the given shape into *out,
   reusing it when it already fits. */
static int bn_alloc(PyArrayObject** out, int nd, npy_intp* dims)
{
    if (*out && PyArray_NDIM(*out) == nd && PyArray_IS_C_CONTIGUOUS(*out)
            && PyArray_TYPE(*out) == NPY_FLOAT32) {
        int same = 1;
        for (int i = 0; i < nd; i++)
            same = same && PyArray_DIMS(*out)[i] == dims[i];
        if (same)
            return 0;
    }
    Py_XDECREF(*out);
    *out = (PyArrayObject*)PyArray_EMPTY(nd, dims, NPY_FLOAT32, 0);
    return *out == NULL;
}

/* A channel's values are N rows of S contiguous floats, `stride` apart. */
static double bn_sum(const float* p, npy_intp N, npy_intp S, npy_intp stride)
{
    double total = 0;
    for (npy_intp n = 0; n < N; n++) {
        const float* row = p + n * stride;
        float s = 0;
        #pragma omp simd reduction(+:s)
        for (npy_intp i = 0; i < S; i++)
            s += row[i];
        total += s;
    }
    return total;
}

static double bn_sum_sq_dev(const float* p, float m, npy_intp N, npy_intp S,
                            npy_intp stride)
{
    double total = 0;
    for (npy_intp n = 0; n < N; n++) {
        const float* row = p + n * stride;
        float s = 0;
        #pragma omp simd reduction(+:s)
        for (npy_intp i = 0; i < S; i++)
            s += (row[i] - m) * (row[i] - m);
        total += s;
    }
    return total;
}
"""

# Every op: 4-d float32 inputs of one shape, then per-channel vectors; a 4-d
# output of that shape, then per-channel vectors. The prologue makes the
# inputs contiguous, checks the shapes and allocates; the body sees
# pointers named after the inputs and outputs, and N, C, S (= rows * cols).
_FRAME = """
{
    PyArrayObject* in[%(n_in)d] = {%(contiguous)s};
    npy_intp N = 0, C = 0, S = 0, cdim[1];
    int bad = 0;
    for (int i = 0; i < %(n_in)d; i++)
        bad = bad || in[i] == NULL || PyArray_TYPE(in[i]) != NPY_FLOAT32
              || PyArray_NDIM(in[i]) != (i < %(n_4d)d ? 4 : 1);
    if (!bad) {
        N = PyArray_DIMS(in[0])[0], C = PyArray_DIMS(in[0])[1];
        S = PyArray_DIMS(in[0])[2] * PyArray_DIMS(in[0])[3];
        cdim[0] = C;
        for (int i = 1; i < %(n_in)d; i++)
            for (int d = 0; d < PyArray_NDIM(in[i]); d++)
                bad = bad || PyArray_DIMS(in[i])[d] != PyArray_DIMS(in[0])[
                    i < %(n_4d)d ? d : 1];
    }
    if (!bad)
        bad = %(alloc)s;
    if (!bad) {
        %(pointers)s
        double count = (double)N * S;
        %(body)s
    }
    for (int i = 0; i < %(n_in)d; i++)
        Py_XDECREF(in[i]);
    if (bad) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError,
                            "%(op)s: inputs of mismatched shapes or types");
        %(fail)s
    }
}
"""

# y = (x - mean) * (gamma * inv_std) + beta, as Lasagne writes it, and the
# ReLU where asked for; used on one row of S values of channel c.
_NORMALIZE = """
            float scale = gamma[c] * inv_std_[c], shift = beta[c];
            #pragma omp simd
            for (npy_intp i = 0; i < S; i++) {
                float v = (xr[i] - m) * scale + shift;
                yr[i] = RELU ? (v > 0 ? v : 0) : v;
            }
"""

_TRAIN = """
        const float* inv_std_ = inv_std;
        #pragma omp parallel for schedule(static)
        for (npy_intp c = 0; c < C; c++) {
            float m = (float)(bn_sum(x + c * S, N, S, C * S) / count);
            double var = bn_sum_sq_dev(x + c * S, m, N, S, C * S) / count;
            mean[c] = m;
            inv_std[c] = (float)(1.0 / sqrt(var + EPSILON));
            for (npy_intp n = 0; n < N; n++) {
                const float* xr = x + (n * C + c) * S;
                float* yr = y + (n * C + c) * S;
""" + _NORMALIZE + """
            }
        }
"""

_INFER = """
        const float* inv_std_ = inv_std;
        #pragma omp parallel for schedule(static)
        for (npy_intp nc = 0; nc < N * C; nc++) {
            npy_intp c = nc % C;
            float m = mean[c];
            const float* xr = x + nc * S;
            float* yr = y + nc * S;
""" + _NORMALIZE + """
        }
"""

# dx = gamma * inv_std * (dy - mean(dy) - xhat * mean(dy * xhat)), with dy
# zeroed where the ReLU was off.
_GRAD = """
        #pragma omp parallel for schedule(static)
        for (npy_intp c = 0; c < C; c++) {
            float m = mean[c], inv = inv_std[c];
            float scale = gamma[c] * inv, shift = beta[c];
            double sum_dy = 0, sum_dy_xc = 0;
            for (npy_intp n = 0; n < N; n++) {
                const float* xr = x + (n * C + c) * S;
                const float* dr = dy + (n * C + c) * S;
                float s1 = 0, s2 = 0;
                #pragma omp simd reduction(+:s1, s2)
                for (npy_intp i = 0; i < S; i++) {
                    float xc = xr[i] - m;
                    float d = (!RELU || xc * scale + shift > 0) ? dr[i] : 0;
                    s1 += d;
                    s2 += d * xc;
                }
                sum_dy += s1;
                sum_dy_xc += s2;
            }
            dbeta[c] = (float)sum_dy;
            dgamma[c] = (float)(sum_dy_xc * inv);
            float a = (float)(sum_dy / count);
            float b = (float)(sum_dy_xc * inv * inv / count);
            for (npy_intp n = 0; n < N; n++) {
                const float* xr = x + (n * C + c) * S;
                const float* dr = dy + (n * C + c) * S;
                float* out = dx + (n * C + c) * S;
                #pragma omp simd
                for (npy_intp i = 0; i < S; i++) {
                    float xc = xr[i] - m;
                    float d = (!RELU || xc * scale + shift > 0) ? dr[i] : 0;
                    out[i] = scale * (d - a - xc * b);
                }
            }
        }
"""

# y = x + bias, per channel, and the ReLU where asked for.
_BIAS = """
        #pragma omp parallel for schedule(static)
        for (npy_intp nc = 0; nc < N * C; nc++) {
            float b = bias[nc % C];
            const float* xr = x + nc * S;
            float* yr = y + nc * S;
            #pragma omp simd
            for (npy_intp i = 0; i < S; i++) {
                float v = xr[i] + b;
                yr[i] = RELU ? (v > 0 ? v : 0) : v;
            }
        }
"""

# Theano reuses a compiled op by its version alone: derive it from the code.
_VERSION = (2, zlib.crc32(
    (_SUPPORT + _FRAME + _NORMALIZE + _TRAIN + _INFER + _GRAD
     + _BIAS).encode()))

_B = (slice(None), None, None)  # a channel vector against (N, C, R, C)


def _numpy_normalize(x, mean, inv_std, gamma, beta, relu):
    y = (x - mean[_B]) * (gamma * inv_std)[_B] + beta[_B]
    return np.maximum(y, 0) if relu else y


class _BatchNormOp(OpenMPOp):
    """Shared by the three ops: the names of the inputs (4-d ones first)
    and outputs, the C frame, and whether a ReLU follows."""
    __props__ = ('relu',)
    c_inputs = c_outputs = ()
    n_4d = 1
    c_body = ''

    def __init__(self, relu=False, openmp=None):
        super().__init__(openmp=openmp)
        self.relu = bool(relu)

    def make_node(self, *inputs):
        tensors = [T.as_tensor_variable(v) for v in inputs[:self.n_4d]]
        if any(t.type != T.ftensor4 for t in tensors):
            raise TypeError('%s needs 4-d float32 tensors'
                            % type(self).__name__)
        vectors = [T.as_tensor_variable(v).astype('float32')
                   for v in inputs[self.n_4d:]]
        outputs = [T.ftensor4()] + [T.fvector() for _ in self.c_outputs[1:]]
        return Apply(self, tensors + vectors, outputs)

    def infer_shape(self, node, shapes):
        channels = (shapes[0][1],)
        return [shapes[0]] + [channels] * (len(self.c_outputs) - 1)

    def c_support_code(self):
        return _SUPPORT

    def c_code_cache_version(self):
        return _VERSION

    def c_code(self, node, name, inputs, outputs, sub):
        pointers = ['const float* %s = (const float*)PyArray_DATA(in[%d]);'
                    % (n, i) for i, n in enumerate(self.c_inputs)]
        pointers += ['float* %s = (float*)PyArray_DATA(%s);' % (n, v)
                     for n, v in zip(self.c_outputs, outputs)]
        alloc = ['bn_alloc(&%s, 4, PyArray_DIMS(in[0]))' % outputs[0]]
        alloc += ['bn_alloc(&%s, 1, cdim)' % v for v in outputs[1:]]
        body = self.c_body.replace('RELU', '1' if self.relu else '0').replace(
            'EPSILON', repr(getattr(self, 'epsilon', 0.0)))
        return _FRAME % dict(
            n_in=len(inputs), n_4d=self.n_4d, op=type(self).__name__,
            contiguous=', '.join('PyArray_GETCONTIGUOUS(%s)' % v
                                 for v in inputs),
            alloc=' || '.join(alloc), pointers='\n        '.join(pointers),
            body=body, fail=sub['fail'])


class BatchNormTrain(_BatchNormOp):
    """(x, gamma, beta) -> (y, mean, inv_std), the statistics over axes
    0, 2, 3 of a 4-d float32 x."""
    __props__ = ('epsilon', 'relu')
    c_inputs = ('x', 'gamma', 'beta')
    c_outputs = ('y', 'mean', 'inv_std')
    c_body = _TRAIN

    def __init__(self, epsilon=1e-4, relu=False, openmp=None):
        super().__init__(relu=relu, openmp=openmp)
        self.epsilon = float(epsilon)

    def perform(self, node, inputs, outputs):
        x, gamma, beta = inputs
        mean = x.mean((0, 2, 3), dtype='float64').astype('float32')
        var = ((x - mean[_B]) ** 2).mean((0, 2, 3), dtype='float64')
        inv_std = (1 / np.sqrt(var + self.epsilon)).astype('float32')
        y = _numpy_normalize(x, mean, inv_std, gamma, beta, self.relu)
        for out, value in zip(outputs, (y, mean, inv_std)):
            out[0] = value.astype('float32')

    def grad(self, inputs, output_grads):
        x, gamma, beta = inputs
        gy, gmean, ginv_std = output_grads
        _, mean, inv_std = self(x, gamma, beta)
        if isinstance(gy.type, DisconnectedType):
            gy = T.zeros_like(x)
        gx, ggamma, gbeta = BatchNormTrainGrad(self.relu)(
            x, gy, gamma, beta, mean, inv_std)
        # The statistics are outputs too; where a cost uses them directly
        # (BN layers do not), their gradients are added here.
        count = T.cast(x.shape[0] * x.shape[2] * x.shape[3], 'float32')
        pattern = ('x', 0, 'x', 'x')
        if not isinstance(gmean.type, DisconnectedType):
            gx = gx + gmean.dimshuffle(pattern) / count
        if not isinstance(ginv_std.type, DisconnectedType):
            gx = gx - (ginv_std * inv_std ** 3).dimshuffle(pattern) * (
                x - mean.dimshuffle(pattern)) / count
        return [gx, ggamma, gbeta]


class BatchNormTrainGrad(_BatchNormOp):
    """(x, dy, gamma, beta, mean, inv_std) -> (dx, dgamma, dbeta) for the y
    of BatchNormTrain."""
    c_inputs = ('x', 'dy', 'gamma', 'beta', 'mean', 'inv_std')
    c_outputs = ('dx', 'dgamma', 'dbeta')
    n_4d = 2
    c_body = _GRAD

    def perform(self, node, inputs, outputs):
        x, gy, gamma, beta, mean, inv_std = inputs
        if self.relu:
            gy = gy * (_numpy_normalize(x, mean, inv_std, gamma, beta,
                                        False) > 0)
        xhat = (x - mean[_B]) * inv_std[_B]
        count = x.shape[0] * x.shape[2] * x.shape[3]
        gbeta = gy.sum((0, 2, 3), dtype='float64')
        ggamma = (gy * xhat).sum((0, 2, 3), dtype='float64')
        gx = (gamma * inv_std)[_B] * (
            gy - (gbeta / count).astype('float32')[_B]
            - xhat * (ggamma / count).astype('float32')[_B])
        for out, value in zip(outputs, (gx, ggamma, gbeta)):
            out[0] = value.astype('float32')


class BatchNormInfer(_BatchNormOp):
    """(x, mean, inv_std, gamma, beta) -> y with given statistics (the
    running averages of a deterministic pass)."""
    c_inputs = ('x', 'mean', 'inv_std', 'gamma', 'beta')
    c_outputs = ('y',)
    c_body = _INFER

    def perform(self, node, inputs, outputs):
        outputs[0][0] = _numpy_normalize(*inputs, relu=self.relu).astype(
            'float32')

    def grad(self, inputs, output_grads):
        # Rarely needed (saliency on a deterministic pass): the gradient of
        # the same expression written in Theano.
        x, mean, inv_std, gamma, beta = inputs
        pattern = ('x', 0, 'x', 'x')
        y = ((x - mean.dimshuffle(pattern))
             * (gamma * inv_std).dimshuffle(pattern) + beta.dimshuffle(pattern))
        if self.relu:
            y = T.nnet.relu(y)
        return theano.grad(None, inputs, known_grads={y: output_grads[0]})


class BiasAdd(_BatchNormOp):
    """(x, bias) -> x + bias over the channels (axis 1) of a 4-d float32
    x, and the ReLU if relu=True."""
    c_inputs = ('x', 'bias')
    c_outputs = ('y',)
    c_body = _BIAS

    def perform(self, node, inputs, outputs):
        x, bias = inputs
        y = x + bias[_B]
        outputs[0][0] = (np.maximum(y, 0) if self.relu else y).astype(
            'float32')

    def grad(self, inputs, output_grads):
        # for gradient attributions on the inference graph
        x, bias = inputs
        y = x + bias.dimshuffle('x', 0, 'x', 'x')
        if self.relu:
            y = T.nnet.relu(y)
        return theano.grad(None, inputs, known_grads={y: output_grads[0]})


def bias_add(x, bias):
    """x + bias over axis 1, as BiasAdd where it applies (a CPU, 4-d
    float32 x), else as the plain expression."""
    if available() and x.type == T.ftensor4:
        return BiasAdd()(x, bias)
    return x + bias.dimshuffle(('x', 0) + ('x',) * (x.ndim - 2))


def batch_norm_train(x, gamma, beta, epsilon):
    """y, batch mean and batch inv_std of a training-mode BN over axes
    (0, 2, 3) of x."""
    return BatchNormTrain(epsilon)(x, gamma, beta)


def batch_norm_infer(x, mean, inv_std, gamma, beta):
    return BatchNormInfer()(x, mean, inv_std, gamma, beta)


def with_rectify(y):
    """rectify(y) as one op with the BN (or BiasAdd) that made y, or None
    if y is not the output of a ReLU-less op of this module. The BN layer
    may leave a `rebind` callback on y's tag: it is told the new op's
    statistics, so that the running averages follow the op that stays in
    the graph."""
    node = y.owner
    if node is None or not isinstance(node.op, _BatchNormOp) or \
            node.op.relu or node.outputs[0] is not y:
        return None
    op = type(node.op)(**dict(node.op._props_dict(), relu=True))
    outputs = op(*node.inputs, return_list=True)
    rebind = getattr(y.tag, 'rebind', None)
    if rebind is not None:
        rebind(*outputs[1:])
    return outputs[0]
