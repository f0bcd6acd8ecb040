"""The inference graph: each batch norm folded into the convolution before it.

In a deterministic pass a BN layer is a fixed per-channel affine map of its
convolution's output,
    y = (conv(x, W) - mean) * gamma * inv_std + beta = conv(x, W * s) + b
with s = gamma * inv_std and b = beta - mean * s, the same number up to
float32 rounding. `get_output` builds that form: the convolution's weights
scaled per output channel, then the bias and the ReLU after it in one pass
(`fastbn.BiasAdd` on the CPU; Theano's own elementwise op for it measured
7-9x slower). The compiled function has convolutions and no batch-norm op.
The training graph is untouched: training needs the batch's statistics.

The fold is written from the layers' shared variables, not computed once
into constants: a function compiled here keeps following the parameters as
training moves them (train.py evaluates after every epoch with a function
compiled once) and as a checkpoint is loaded into them. The price is a few
per-channel products and one product over each weight array per call,
about 0.2 M multiplications for GCM's 162 K weights against 30 M
multiply-adds per image.
"""
import lasagne
from lasagne.layers import InputLayer, MergeLayer
from lasagne.nonlinearities import identity
from theano.gof.graph import clone_get_equiv

from . import fastbn
from .compat import BatchNormLayer, TransposedConv2DLayer


def get_output(layer_or_layers):
    """lasagne.layers.get_output(layer_or_layers, deterministic=True) from
    the network's input variables, with every BN that directly follows a
    convolution (or transposed convolution) folded into it. Other layers,
    and a BN after anything else, are computed as Lasagne computes them."""
    memo = {}
    if isinstance(layer_or_layers, (list, tuple)):
        return [_output(layer, memo) for layer in layer_or_layers]
    return _output(layer_or_layers, memo)


def foldable(layer):
    """Whether `layer` is a BN that get_output folds into its input layer."""
    if not isinstance(layer, BatchNormLayer) or layer.axes != (0, 2, 3):
        return False
    conv = layer.input_layer
    # batch_norm() leaves the convolution without bias and nonlinearity;
    # with either, the BN is not an affine map of conv(x, W) alone.
    return (isinstance(conv, (lasagne.layers.Conv2DLayer,
                              TransposedConv2DLayer))
            and getattr(conv, 'b', None) is None
            and conv.nonlinearity is identity)


def _output(layer, memo):
    # Recursive, not Lasagne's topological loop, so that a folded BN's
    # convolution is never built on its own. Depth: about 3 per conv.
    if layer not in memo:
        if isinstance(layer, InputLayer):
            out = layer.input_var
        elif foldable(layer):
            conv = layer.input_layer
            out = _folded(conv, layer, _output(conv.input_layer, memo))
        elif isinstance(layer, MergeLayer):
            out = layer.get_output_for(
                [_output(l, memo) for l in layer.input_layers],
                deterministic=True)
        else:
            # a ReLU after a folded BN joins its BiasAdd (fastbn.with_rectify)
            out = layer.get_output_for(_output(layer.input_layer, memo),
                                       deterministic=True)
        memo[layer] = out
    return memo[layer]


def folded_weights(conv, bn):
    """(W * s, b): the weights scaled per output channel and the bias, as
    expressions of the layers' parameters."""
    scale = bn.inv_std if bn.gamma is None else bn.gamma * bn.inv_std
    bias = -bn.mean * scale
    if bn.beta is not None:
        bias = bias + bn.beta
    # Output channels are W's first axis in a convolution and its second in
    # a transposed one (Lasagne's shapes: (out, in, r, c), (in, out, r, c)).
    axis = 1 if isinstance(conv, TransposedConv2DLayer) else 0
    pattern = ['x'] * conv.W.ndim
    pattern[axis] = 0
    return conv.W * scale.dimshuffle(pattern), bias


def _folded(conv, bn, x):
    W, bias = folded_weights(conv, bn)
    # The layer's own get_output_for, so padding, stride and flipping are
    # the layer's, then its W replaced by the folded one in the few nodes
    # between (x, W) and the output. Not theano.clone: it would copy all
    # of x's graph too, once per layer, and a residual block uses x twice,
    # so ResNet-20's gradient graph grew exponentially (110 s to compile).
    conved = conv.get_output_for(x)
    return fastbn.bias_add(clone_get_equiv(
        [x, conv.W], [conved], copy_inputs=False, copy_orphans=False,
        memo={conv.W: W})[conved], bias)
