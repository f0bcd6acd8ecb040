"""Inference: the bias and ReLU after a convolution, inside the convolution.

An inference graph (inference.py) is a convolution, then `fastbn.BiasAdd`
(the folded batch norm's bias, and its ReLU), layer after layer. As two ops
the BiasAdd reads and writes every activation once more after the
convolution has written it; here the convolution applies it to each image's
output as soon as that is written, while it is still in the cache (C:
fc_epilogue in c_code/fastconv.c), the same float32 expression, so the same
bits. The transposed convolutions of GCM's decoder are fastconv's input
gradient op and take it the same way.

Importing this module registers the graph optimizer 'gcm_convfuse' (CPU,
fast_run), which replaces BiasAdd(conv(x, W), b) with one op when nothing
else reads conv(x, W). It runs after 'gcm_fastconv' has made the fastconv
ops, at compile time, when any gradient is already in the graph: the fused
ops have none of their own.
"""
import numpy as np
import theano.tensor as T
from theano import gof
from theano.gof import Apply

from . import fastbn, fastconv


class _Epilogue(object):
    """Shared by the two fused ops: the ReLU flag, the bias as the last
    input, the C code that hands both to the convolution."""
    # which C variable holds the output channels: the bias's length
    _channels = None

    def __init__(self, border_mode='valid', subsample=(1, 1), relu=False,
                 openmp=None):
        super().__init__(border_mode, subsample, openmp=openmp)
        self.relu = bool(relu)

    def _with_bias(self, node, bias):
        bias = T.as_tensor_variable(bias)
        if bias.type != T.fvector:
            raise TypeError('the bias must be a float32 vector, got %s'
                            % (bias.type,))
        return Apply(self, node.inputs + [bias], [node.outputs[0].type()])

    def infer_shape(self, node, input_shapes):
        return super().infer_shape(node, input_shapes[:-1])

    def _epilogue_code(self, inputs, sub):
        return """
    if (fc_ok) {
        fc_c = PyArray_GETCONTIGUOUS(%(bias)s);
        if (!fc_c || PyArray_NDIM(fc_c) != 1
                || PyArray_TYPE(fc_c) != NPY_FLOAT32
                || PyArray_DIMS(fc_c)[0] != %(channels)s) {
            if (fc_c)
                PyErr_Format(PyExc_ValueError,
                    "%(op)s: the bias needs %%ld float32 values",
                    (long)%(channels)s);
            fc_ok = 0;
        } else {
            fc_e.bias = (const float*)PyArray_DATA(fc_c);
            fc_e.relu = %(relu)d;
        }
    }
""" % dict(bias=inputs[-1], channels=self._channels, relu=self.relu,
           op=type(self).__name__)

    def _finish(self, y, bias):
        y = y + bias[None, :, None, None]
        return np.where(y > 0, y, 0).astype('float32') if self.relu else y

    def grad(self, inputs, output_grads):
        raise NotImplementedError(
            '%s is made by a compile-time optimizer, after gradients are '
            'taken' % type(self).__name__)


class FastCorrMMBias(_Epilogue, fastconv.FastCorrMM):
    """(img, kern, bias) -> correlation + bias over the output channels,
    then the ReLU if relu=True."""
    __props__ = fastconv.FastCorrMM.__props__ + ('relu',)
    _channels = 'M'

    def make_node(self, img, kern, bias):
        return self._with_bias(super().make_node(img, kern), bias)

    def perform(self, node, inputs, outputs, params=None):
        super().perform(node, inputs[:2], outputs)
        outputs[0][0] = self._finish(outputs[0][0], inputs[2])

    def connection_pattern(self, node):
        return [[1], [1], [1]]


class FastCorrMM_gradInputsBias(_Epilogue, fastconv.FastCorrMM_gradInputs):
    """(kern, topgrad, h, w, bias) -> input gradient (a transposed
    convolution) + bias, then the ReLU if relu=True."""
    __props__ = fastconv.FastCorrMM_gradInputs.__props__ + ('relu',)
    _channels = 'C'

    def make_node(self, kern, topgrad, shape, bias):
        return self._with_bias(super().make_node(kern, topgrad, shape), bias)

    def perform(self, node, inputs, outputs, params=None):
        super().perform(node, inputs[:4], outputs)
        outputs[0][0] = self._finish(outputs[0][0], inputs[4])

    def connection_pattern(self, node):
        return [[1], [1], [0], [0], [1]]


@gof.local_optimizer([fastbn.BiasAdd])
def local_gcm_convfuse(node):
    """BiasAdd{relu}(FastCorrMM*(...), b) -> FastCorrMM*Bias{relu}(..., b)."""
    if not isinstance(node.op, fastbn.BiasAdd):
        return None
    conved, bias = node.inputs
    conv = conved.owner
    if (conv is None or bias.type != T.fvector
            or type(conv.op) not in (fastconv.FastCorrMM,
                                     fastconv.FastCorrMM_gradInputs)):
        return None
    # the convolution's own output must go nowhere else
    if len(getattr(conved, 'clients', ())) != 1:
        return None
    op = conv.op
    if isinstance(op, fastconv.FastCorrMM):
        fused = FastCorrMMBias(op.border_mode, op.subsample, node.op.relu)
        new = fused(conv.inputs[0], conv.inputs[1], bias)
    else:
        fused = FastCorrMM_gradInputsBias(op.border_mode, op.subsample,
                                          node.op.relu)
        new = fused(conv.inputs[0], conv.inputs[1], conv.inputs[2:4], bias)
    if new.type != node.outputs[0].type:
        return None
    gof.opt.copy_stack_trace(node.outputs[0], new)
    return [new]


OPTIMIZER_NAME = 'gcm_convfuse'


def register():
    """Right after gcm_fastconv (48.8), before the in-place optimizations."""
    fastconv.register_optimizer(OPTIMIZER_NAME, local_gcm_convfuse, 48.85)


if fastconv.enabled_by_environment():
    register()
