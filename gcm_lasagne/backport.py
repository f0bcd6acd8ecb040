"""Layers that Lasagne 0.1 (PyPI) lacks, with the constructor arguments,
defaults and semantics of Lasagne 0.2.dev1 (GitHub master), so that the
models build the same on either. `compat` picks Lasagne's own convolution
layers when present, and always this BatchNormLayer, whose training mode
runs as the fused ops of `fastbn` on the CPU (equal to master's expression
up to float32 rounding; deterministic mode is master's expression).
Written for this project; checked against numpy in tests/test_layers.py,
tests/test_fastbn.py and against an installed master in
docs/lasagne-master-check.md."""
import numbers

import theano
import theano.tensor as T
from lasagne import init, nonlinearities
from lasagne.layers import Layer, NonlinearityLayer
from lasagne.layers import Conv2DLayer as _Conv2DLayer01

from . import fastbn


def _pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * 2


class Conv2DLayer(_Conv2DLayer01):
    """Lasagne 0.1's Conv2DLayer, except that pad='same' with odd filters is
    one convolution in Theano's 'half' mode, as in master. 0.1 computes a
    full convolution and crops it (measured 8-35% slower, same result)."""

    def get_output_for(self, input, **kwargs):
        if self.pad != 'same' or not all(f % 2 for f in self.filter_size):
            return super().get_output_for(input, **kwargs)
        conved = T.nnet.conv2d(input, self.W, input_shape=self.input_shape,
                               filter_shape=self.get_W_shape(),
                               border_mode='half', subsample=self.stride)
        if self.b is not None:
            pattern = ('x', 0, 1, 2) if self.untie_biases else ('x', 0, 'x', 'x')
            conved = conved + self.b.dimshuffle(*pattern)
        return self.nonlinearity(conved)


class BatchNormLayer(Layer):
    """Batch normalization (Ioffe & Szegedy 2015) over `axes` ('auto': all
    but the channel axis 1). In training mode the batch's statistics are used
    and the running `mean` and `inv_std` move towards them by `alpha`; with
    deterministic=True the running values are used and left alone.
    `batch_norm_use_averages` / `batch_norm_update_averages` override either.
    """

    def __init__(self, incoming, axes='auto', epsilon=1e-4, alpha=0.1,
                 beta=init.Constant(0), gamma=init.Constant(1),
                 mean=init.Constant(0), inv_std=init.Constant(1), **kwargs):
        super().__init__(incoming, **kwargs)
        if axes == 'auto':
            axes = (0,) + tuple(range(2, len(self.input_shape)))
        elif isinstance(axes, numbers.Integral):
            axes = (axes,)
        self.axes = tuple(axes)
        self.epsilon = epsilon
        self.alpha = alpha
        shape = [n for axis, n in enumerate(self.input_shape)
                 if axis not in self.axes]
        if any(n is None for n in shape):
            raise ValueError('BatchNormLayer needs the size of every axis '
                             'it does not normalize over')
        self.beta = None if beta is None else self.add_param(
            beta, shape, 'beta', trainable=True, regularizable=False)
        self.gamma = None if gamma is None else self.add_param(
            gamma, shape, 'gamma', trainable=True, regularizable=True)
        self.mean = self.add_param(mean, shape, 'mean', trainable=False,
                                   regularizable=False, batch_norm_stat=True)
        self.inv_std = self.add_param(inv_std, shape, 'inv_std',
                                      trainable=False, regularizable=False,
                                      batch_norm_stat=True)

    def get_output_for(self, input, deterministic=False,
                       batch_norm_use_averages=None,
                       batch_norm_update_averages=None, **kwargs):
        use_averages = (deterministic if batch_norm_use_averages is None
                        else batch_norm_use_averages)
        update_averages = (not deterministic
                           if batch_norm_update_averages is None
                           else batch_norm_update_averages)
        if self._fusable(input):
            if not use_averages:
                return self._fused_training(input, update_averages)
            if not update_averages:
                return fastbn.batch_norm_infer(input, self.mean, self.inv_std,
                                               self.gamma, self.beta)
        mean, inv_std = self.mean, self.inv_std
        if not use_averages or update_averages:
            batch_mean = input.mean(self.axes)
            # the biased variance (divide by N), as master
            batch_inv_std = T.inv(T.sqrt(input.var(self.axes) + self.epsilon))
        if not use_averages:
            mean, inv_std = batch_mean, batch_inv_std
        if update_averages:
            # "+ 0 * x" puts x in the graph without changing the value
            mean = mean + 0 * self._moving_average(self.mean, batch_mean)
            inv_std = inv_std + 0 * self._moving_average(self.inv_std,
                                                         batch_inv_std)
        # broadcast the per-feature vectors over the normalized axes
        kept = iter(range(input.ndim - len(self.axes)))
        pattern = ['x' if axis in self.axes else next(kept)
                   for axis in range(input.ndim)]
        gamma = 1 if self.gamma is None else self.gamma.dimshuffle(pattern)
        beta = 0 if self.beta is None else self.beta.dimshuffle(pattern)
        return ((input - mean.dimshuffle(pattern))
                * (gamma * inv_std.dimshuffle(pattern)) + beta)

    def _fusable(self, input):
        return (fastbn.available() and input.ndim == 4
                and input.dtype == 'float32' and self.axes == (0, 2, 3)
                and self.gamma is not None and self.beta is not None)

    def _fused_training(self, input, update_averages):
        """Training mode as the ops of `fastbn` (same maths, 5 passes over
        the tensor instead of about 12, on all cores)."""
        gamma = self.gamma
        if update_averages:
            moving = self.mean.clone(), self.inv_std.clone()
            # into the graph as in _moving_average, on a C-sized vector
            gamma = gamma + 0 * (moving[0] + moving[1])
        output, batch_mean, batch_inv_std = fastbn.batch_norm_train(
            input, gamma, self.beta, self.epsilon)
        if update_averages:
            def rebind(batch_mean, batch_inv_std):
                self._move(moving[0], batch_mean)
                self._move(moving[1], batch_inv_std)
            rebind(batch_mean, batch_inv_std)
            # a ReLU fused in later makes a new op: the averages follow it
            output.tag.rebind = rebind
        return output

    def _moving_average(self, running, batch):
        # A compiled function applies the default_update of every shared
        # variable in its graph. A clone shares the running average's
        # storage, so the update lands there, while the parameter itself
        # stays free of updates for deterministic graphs.
        moving = running.clone()
        self._move(moving, batch)
        return moving

    def _move(self, moving, batch):
        moving.default_update = (1 - self.alpha) * moving + self.alpha * batch


def batch_norm(layer, **kwargs):
    """Put a BatchNormLayer after `layer`: the layer loses its bias (BN's
    beta replaces it) and its nonlinearity, which moves after the BN in a
    NonlinearityLayer. Returns the last layer (`<name>_bn_nonlin`)."""
    nonlinearity = getattr(layer, 'nonlinearity', None)
    if nonlinearity is not None:
        layer.nonlinearity = nonlinearities.identity
    if getattr(layer, 'b', None) is not None:
        del layer.params[layer.b]
        layer.b = None
    name = kwargs.pop('name', None) or (
        getattr(layer, 'name', None) and layer.name + '_bn')
    layer = BatchNormLayer(layer, name=name, **kwargs)
    if nonlinearity is not None:
        layer = _NonlinearityAfterBN(layer, nonlinearity,
                                     name=name and name + '_nonlin')
    return layer


class _NonlinearityAfterBN(NonlinearityLayer):
    """Lasagne's NonlinearityLayer, except that a ReLU is computed inside
    the fused BN op before it where there is one (see fastbn)."""

    def get_output_for(self, input, **kwargs):
        if self.nonlinearity is nonlinearities.rectify:
            fused = fastbn.with_rectify(input)
            if fused is not None:
                return fused
        return super().get_output_for(input, **kwargs)


def _transposed_length(length, filter_size, stride, crop):
    if length is None:
        return None
    pad = {'valid': 0, 'full': filter_size - 1,
           'same': filter_size // 2}.get(crop, crop)
    return (length - 1) * stride - 2 * pad + filter_size


class TransposedConv2DLayer(Layer):
    """The transpose of a Conv2DLayer: the gradient of a convolution with
    respect to its input ("deconvolution"). W has shape (input channels,
    num_filters, rows, cols). The output is (in - 1) * stride - 2 * crop +
    filter, or `output_size` where given (up to stride - 1 larger)."""

    def __init__(self, incoming, num_filters, filter_size, stride=(1, 1),
                 crop=0, untie_biases=False, W=init.GlorotUniform(),
                 b=init.Constant(0.), nonlinearity=nonlinearities.rectify,
                 flip_filters=False, output_size=None, **kwargs):
        super().__init__(incoming, **kwargs)
        self.num_filters = num_filters
        self.filter_size = _pair(filter_size)
        self.stride = _pair(stride)
        if crop == 'same' and not all(f % 2 for f in self.filter_size):
            raise NotImplementedError("crop='same' needs odd filter sizes")
        self.crop = crop if crop in ('valid', 'full', 'same') else _pair(crop)
        self.untie_biases = untie_biases
        self.flip_filters = flip_filters
        self.output_size = None if output_size is None else _pair(output_size)
        self.nonlinearity = (nonlinearities.identity if nonlinearity is None
                             else nonlinearity)
        self.W = self.add_param(W, self.get_W_shape(), 'W')
        if b is None:
            self.b = None
        else:
            shape = ((num_filters,) + self.output_shape[2:]
                     if untie_biases else (num_filters,))
            self.b = self.add_param(b, shape, 'b', regularizable=False)

    def get_W_shape(self):
        return (self.input_shape[1], self.num_filters) + self.filter_size

    def _output_size(self, lengths):
        if self.output_size is not None:
            return self.output_size
        crop = self.crop if isinstance(self.crop, tuple) else (self.crop,) * 2
        return tuple(_transposed_length(n, f, s, c) for n, f, s, c in zip(
            lengths, self.filter_size, self.stride, crop))

    def get_output_shape_for(self, input_shape):
        return ((input_shape[0], self.num_filters)
                + self._output_size(input_shape[2:]))

    def get_output_for(self, input, **kwargs):
        border_mode = {'same': 'half', 'full': 'full',
                       'valid': 'valid'}.get(self.crop, self.crop)
        size = self.output_shape[2:]
        if None in size:  # unknown input size: compute it symbolically
            size = self._output_size([input.shape[2], input.shape[3]])
        op = T.nnet.abstract_conv.AbstractConv2d_gradInputs(
            imshp=self.output_shape, kshp=self.get_W_shape(),
            subsample=self.stride, border_mode=border_mode,
            filter_flip=not self.flip_filters)
        conved = op(self.W, input, size)
        if self.b is not None:
            pattern = ('x', 0, 1, 2) if self.untie_biases else ('x', 0, 'x', 'x')
            conved = conved + self.b.dimshuffle(*pattern)
        return self.nonlinearity(conved)


Deconv2DLayer = TransposedConv2DLayer
