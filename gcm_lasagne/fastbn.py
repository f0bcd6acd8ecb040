"""Batch normalization in training mode as one compiled op (forward) and one
op (backward), for the CPU.

Written as Theano expressions, a training-mode BN layer costs about a dozen
passes over its (batch, channels, rows, cols) tensor: the mean, the
variance, the normalization, and as many again for the gradient, with the
reductions (`Sum{axis=[0, 2, 3]}`) on one core. On GCM that was 45% of a
training step (docs/performance.md). These ops do the same arithmetic in
three passes forward and two backward, one channel per OpenMP thread.

The maths is Lasagne's, with the biased variance:
    mean = x.mean((0, 2, 3)),  inv_std = 1 / sqrt(x.var((0, 2, 3)) + eps)
    y = (x - mean) * (gamma * inv_std) + beta
and the gradient is the usual closed form
    dx = gamma * inv_std * (dy - mean(dy) - xhat * mean(dy * xhat)).
Sums are taken in float32 within a row of the image and in float64 across
rows, so results equal the plain expression up to float32 rounding
(tests/test_fastbn.py). `BatchNormLayer` uses it on the CPU only; on a GPU
the plain expression stays, for Theano's GPU kernels.
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


_CHECK = """
if (PyArray_NDIM(%(x)s) != 4 || PyArray_TYPE(%(x)s) != NPY_FLOAT32) {
    PyErr_SetString(PyExc_TypeError, "BatchNorm op: need a 4-d float32 input");
    %(fail)s
}
"""

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

_FORWARD = """
{
    PyArrayObject* xc = PyArray_GETCONTIGUOUS(%(x)s);
    PyArrayObject* gc = PyArray_GETCONTIGUOUS(%(gamma)s);
    PyArrayObject* bc = PyArray_GETCONTIGUOUS(%(beta)s);
    npy_intp N = PyArray_DIMS(xc)[0], C = PyArray_DIMS(xc)[1];
    npy_intp S = PyArray_DIMS(xc)[2] * PyArray_DIMS(xc)[3];
    npy_intp cdim[1] = {C};
    int bad = (PyArray_DIMS(gc)[0] != C || PyArray_DIMS(bc)[0] != C);
    if (!bad)
        bad = bn_alloc(&%(y)s, 4, PyArray_DIMS(xc))
              || bn_alloc(&%(mean)s, 1, cdim) || bn_alloc(&%(inv_std)s, 1, cdim);
    if (!bad) {
        const float* xd = (const float*)PyArray_DATA(xc);
        const float* gd = (const float*)PyArray_DATA(gc);
        const float* bd = (const float*)PyArray_DATA(bc);
        float* yd = (float*)PyArray_DATA(%(y)s);
        float* md = (float*)PyArray_DATA(%(mean)s);
        float* id = (float*)PyArray_DATA(%(inv_std)s);
        double count = (double)N * S;
        #pragma omp parallel for schedule(static)
        for (npy_intp c = 0; c < C; c++) {
            const float* p = xd + c * S;
            float m = (float)(bn_sum(p, N, S, C * S) / count);
            double var = bn_sum_sq_dev(p, m, N, S, C * S) / count;
            float inv = (float)(1.0 / sqrt(var + %(eps)s));
            float scale = gd[c] * inv, shift = bd[c];
            md[c] = m;
            id[c] = inv;
            for (npy_intp n = 0; n < N; n++) {
                const float* row = p + n * C * S;
                float* out = yd + (n * C + c) * S;
                #pragma omp simd
                for (npy_intp i = 0; i < S; i++)
                    out[i] = (row[i] - m) * scale + shift;
            }
        }
    }
    Py_DECREF(xc); Py_DECREF(gc); Py_DECREF(bc);
    if (bad) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError,
                            "BatchNormTrain: gamma/beta do not match the channels");
        %(fail)s
    }
}
"""

_BACKWARD = """
{
    PyArrayObject* xc = PyArray_GETCONTIGUOUS(%(x)s);
    PyArrayObject* dc = PyArray_GETCONTIGUOUS(%(gy)s);
    PyArrayObject* vc[3] = {PyArray_GETCONTIGUOUS(%(gamma)s),
                            PyArray_GETCONTIGUOUS(%(mean)s),
                            PyArray_GETCONTIGUOUS(%(inv_std)s)};
    npy_intp N = PyArray_DIMS(xc)[0], C = PyArray_DIMS(xc)[1];
    npy_intp S = PyArray_DIMS(xc)[2] * PyArray_DIMS(xc)[3];
    npy_intp cdim[1] = {C};
    int bad = 0;
    for (int i = 0; i < 4; i++)
        bad = bad || PyArray_DIMS(dc)[i] != PyArray_DIMS(xc)[i];
    for (int i = 0; i < 3; i++)
        bad = bad || PyArray_DIMS(vc[i])[0] != C;
    if (!bad)
        bad = bn_alloc(&%(gx)s, 4, PyArray_DIMS(xc))
              || bn_alloc(&%(ggamma)s, 1, cdim) || bn_alloc(&%(gbeta)s, 1, cdim);
    if (!bad) {
        const float* xd = (const float*)PyArray_DATA(xc);
        const float* dd = (const float*)PyArray_DATA(dc);
        const float* gd = (const float*)PyArray_DATA(vc[0]);
        const float* md = (const float*)PyArray_DATA(vc[1]);
        const float* id = (const float*)PyArray_DATA(vc[2]);
        float* gxd = (float*)PyArray_DATA(%(gx)s);
        float* ggd = (float*)PyArray_DATA(%(ggamma)s);
        float* gbd = (float*)PyArray_DATA(%(gbeta)s);
        double count = (double)N * S;
        #pragma omp parallel for schedule(static)
        for (npy_intp c = 0; c < C; c++) {
            float m = md[c], inv = id[c];
            double sum_dy = 0, sum_dy_xc = 0;
            for (npy_intp n = 0; n < N; n++) {
                const float* xr = xd + (n * C + c) * S;
                const float* dr = dd + (n * C + c) * S;
                float s1 = 0, s2 = 0;
                #pragma omp simd reduction(+:s1, s2)
                for (npy_intp i = 0; i < S; i++) {
                    s1 += dr[i];
                    s2 += dr[i] * (xr[i] - m);
                }
                sum_dy += s1;
                sum_dy_xc += s2;
            }
            gbd[c] = (float)sum_dy;
            ggd[c] = (float)(sum_dy_xc * inv);
            float k = gd[c] * inv;
            float a = (float)(sum_dy / count);
            float b = (float)(sum_dy_xc * inv * inv / count);
            for (npy_intp n = 0; n < N; n++) {
                const float* xr = xd + (n * C + c) * S;
                const float* dr = dd + (n * C + c) * S;
                float* out = gxd + (n * C + c) * S;
                #pragma omp simd
                for (npy_intp i = 0; i < S; i++)
                    out[i] = k * (dr[i] - a - (xr[i] - m) * b);
            }
        }
    }
    Py_DECREF(xc); Py_DECREF(dc);
    for (int i = 0; i < 3; i++)
        Py_DECREF(vc[i]);
    if (bad) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError,
                            "BatchNormTrainGrad: shapes do not match");
        %(fail)s
    }
}
"""

# Theano reuses a compiled op by this version alone: derive it from the code.
_VERSION = (1, zlib.crc32((_CHECK + _SUPPORT + _FORWARD + _BACKWARD).encode()))


def _vector(var):
    return T.as_tensor_variable(var).astype('float32')


class BatchNormTrain(OpenMPOp):
    """(x, gamma, beta) -> (y, mean, inv_std), statistics over axes 0, 2, 3
    of a 4-d float32 x."""
    __props__ = ('epsilon',)

    def __init__(self, epsilon=1e-4, openmp=None):
        super().__init__(openmp=openmp)
        self.epsilon = float(epsilon)

    def make_node(self, x, gamma, beta):
        x = T.as_tensor_variable(x)
        if x.ndim != 4 or x.dtype != 'float32':
            raise TypeError('BatchNormTrain needs a 4-d float32 input')
        gamma, beta = _vector(gamma), _vector(beta)
        return Apply(self, [x, gamma, beta],
                     [x.type(), T.fvector(), T.fvector()])

    def infer_shape(self, node, shapes):
        return [shapes[0], (shapes[0][1],), (shapes[0][1],)]

    def perform(self, node, inputs, outputs):
        x, gamma, beta = inputs
        mean = x.mean((0, 2, 3), dtype='float64')
        var = ((x - mean[:, None, None].astype(x.dtype)) ** 2).mean(
            (0, 2, 3), dtype='float64')
        inv_std = (1 / np.sqrt(var + self.epsilon)).astype('float32')
        mean = mean.astype('float32')
        y = ((x - mean[:, None, None]) * (gamma * inv_std)[:, None, None]
             + beta[:, None, None])
        outputs[0][0] = y.astype('float32')
        outputs[1][0] = mean
        outputs[2][0] = inv_std

    def grad(self, inputs, output_grads):
        x, gamma, beta = inputs
        gy, gmean, ginv_std = output_grads
        _, mean, inv_std = self(x, gamma, beta)
        if isinstance(gy.type, DisconnectedType):
            gy = T.zeros_like(x)
        gx, ggamma, gbeta = BatchNormTrainGrad()(x, gy, gamma, mean, inv_std)
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

    def c_support_code(self):
        return _SUPPORT

    def c_code_cache_version(self):
        return _VERSION

    def c_code(self, node, name, inputs, outputs, sub):
        x, gamma, beta = inputs
        y, mean, inv_std = outputs
        return (_CHECK + _FORWARD) % dict(locals(), eps=repr(self.epsilon),
                                            fail=sub['fail'])


class BatchNormTrainGrad(OpenMPOp):
    """(x, dy, gamma, mean, inv_std) -> (dx, dgamma, dbeta) for the y of
    BatchNormTrain."""
    __props__ = ()

    def make_node(self, x, gy, gamma, mean, inv_std):
        x, gy = T.as_tensor_variable(x), T.as_tensor_variable(gy)
        if x.ndim != 4 or x.dtype != 'float32' or gy.type != x.type:
            raise TypeError('BatchNormTrainGrad needs 4-d float32 x and dy')
        vectors = [_vector(v) for v in (gamma, mean, inv_std)]
        return Apply(self, [x, gy] + vectors,
                     [x.type(), T.fvector(), T.fvector()])

    def infer_shape(self, node, shapes):
        return [shapes[0], (shapes[0][1],), (shapes[0][1],)]

    def perform(self, node, inputs, outputs):
        x, gy, gamma, mean, inv_std = inputs
        b = (slice(None), None, None)
        xhat = (x - mean[b]) * inv_std[b]
        count = x.shape[0] * x.shape[2] * x.shape[3]
        gbeta = gy.sum((0, 2, 3), dtype='float64')
        ggamma = (gy * xhat).sum((0, 2, 3), dtype='float64')
        gx = (gamma * inv_std)[b] * (
            gy - (gbeta / count).astype('float32')[b]
            - xhat * (ggamma / count).astype('float32')[b])
        outputs[0][0] = gx.astype('float32')
        outputs[1][0] = ggamma.astype('float32')
        outputs[2][0] = gbeta.astype('float32')

    def c_support_code(self):
        return _SUPPORT

    def c_code_cache_version(self):
        return _VERSION

    def c_code(self, node, name, inputs, outputs, sub):
        x, gy, gamma, mean, inv_std = inputs
        gx, ggamma, gbeta = outputs
        return (_CHECK + _BACKWARD) % dict(locals(), fail=sub['fail'])


def batch_norm_train(x, gamma, beta, epsilon):
    """y, batch mean and batch inv_std of a training-mode BN over axes
    (0, 2, 3) of x."""
    return BatchNormTrain(epsilon)(x, gamma, beta)
