"""The networks of Table 1: GCM (shared or basic decoder, optionally clipped)
and the CNN baseline of Sec. 4.4; ResNet-20, a control, is in resnet.py.
Each builder returns a dict of named layers, as Lasagne's model-zoo
recipes do."""
import numpy as np
from lasagne import init
from lasagne.layers import (ConcatLayer, DenseLayer, GlobalPoolLayer,
                            InputLayer, NonlinearityLayer)
from lasagne.nonlinearities import identity, rectify, softmax

from . import paper
from .compat import Conv2DLayer, TransposedConv2DLayer, batch_norm
from .layers import ClassContributionMapLayer, ClassScoreLayer, PixelMeanLayer

MODELS = ('gcm', 'gcm-clip', 'gcm-basic', 'cnn', 'resnet20')


class PerClassGlorotUniform(init.Initializer):
    """Layer 15 is one 5x5 convolution per class. We run the N of them as
    one N-channel convolution, which computes the same thing faster; this
    draws each class's filter as Lasagne would for a one-channel layer, so
    the initial scale is that of N separate layers too."""

    def sample(self, shape):
        one = init.GlorotUniform()
        return np.concatenate([one.sample((1,) + tuple(shape[1:]))
                               for _ in range(shape[0])])


def _block(incoming, row, name_suffix=''):
    """One row of Table 1 except layer 15: a 'same' (de)convolution, then BN
    and ReLU (`batch_norm` drops the convolution's bias)."""
    number, kind, filter_size, channels, stride = row
    name = '%s%d%s' % (kind, number, name_suffix)
    if kind == 'conv':
        layer = Conv2DLayer(incoming, channels, filter_size, stride=stride,
                            pad='same', nonlinearity=rectify, name=name)
    else:
        # Lasagne needs the output size of a strided transposed convolution:
        # several sizes map to the same input size.
        size = tuple(n * stride for n in incoming.output_shape[2:])
        layer = TransposedConv2DLayer(incoming, channels, filter_size,
                                      stride=stride, crop='same',
                                      output_size=size, nonlinearity=rectify,
                                      name=name)
    return batch_norm(layer)


def _stack(net, layer, rows, name_suffix=''):
    for row in rows:
        layer = _block(layer, row, name_suffix)
        net[layer.name[:-len('_bn_nonlin')]] = layer
    return layer


def _class_weight_map(features, num_classes, clip, name):
    number, _, filter_size, _, _ = paper.CLASS_LAYER
    return Conv2DLayer(features, num_classes, filter_size, pad='same',
                       W=PerClassGlorotUniform(),
                       nonlinearity=rectify if clip else identity, name=name)


def _input(net, num_classes, input_shape, input_var):
    channels, rows, cols = input_shape
    if num_classes < 2:
        raise ValueError('a classifier needs at least 2 classes, got %d'
                         % num_classes)
    if rows % 4 or cols % 4:
        raise ValueError('input rows and columns must be divisible by 4 (two '
                         'stride-2 stages), got %dx%d' % (rows, cols))
    net['input'] = InputLayer((None, channels, rows, cols), input_var,
                              name='input')
    return net['input']


def _outputs(net, class_scores):
    net['class_scores'] = class_scores
    net['prob'] = NonlinearityLayer(class_scores, softmax, name='prob')
    return net


def build_gcm(num_classes=10, input_shape=(3, 32, 32), decoder='shared',
              clip=False, input_var=None):
    """GCM of Table 1. decoder='shared': layers 11-14 shared by all classes,
    layer 15 per class (Sec. 3.3, all the paper's experiments); 'basic': a
    full decoder 11-15 per class (Fig. 3). clip=True puts a ReLU after layer
    15 so that the Class Weight Maps are >= 0 (Sec. 4.3)."""
    net = {}
    image = _input(net, num_classes, input_shape, input_var)
    code = _stack(net, image, paper.ENCODER)
    name = 'conv%d' % paper.CLASS_LAYER[0]
    if decoder == 'shared':
        features = _stack(net, code, paper.DECODER)
        net[name] = _class_weight_map(features, num_classes, clip, name)
        class_weight_map = net[name]
    elif decoder == 'basic':
        maps = []
        for j in range(num_classes):
            suffix = '_class%d' % j
            features = _stack(net, code, paper.DECODER, suffix)
            net[name + suffix] = _class_weight_map(features, 1, clip,
                                                   name + suffix)
            maps.append(net[name + suffix])
        class_weight_map = ConcatLayer(maps, axis=1, name='concat')
    else:
        raise ValueError("decoder must be 'shared' or 'basic', got %r"
                         % (decoder,))
    net['class_weight_map'] = class_weight_map
    net['class_contribution_map'] = ClassContributionMapLayer(
        class_weight_map, image, name='class_contribution_map')
    return _outputs(net, ClassScoreLayer(net['class_contribution_map'],
                                         name='class_scores'))


def cnn_rows():
    """Table 1's encoder with layers 2-10 widened by 1.16, rounded down."""
    return tuple((n, kind, f, c if n == 1 else int(c * paper.CNN_WIDTH), s)
                 for n, kind, f, c, s in paper.ENCODER)


def build_cnn(num_classes=10, input_shape=(3, 32, 32), input_var=None):
    """The CNN baseline of Sec. 4.4: the widened encoder, global average
    pooling, a dense layer to the classes. Its input is centred by the
    training set's per-pixel mean, held in net['centre']."""
    net = {}
    image = _input(net, num_classes, input_shape, input_var)
    net['centre'] = PixelMeanLayer(image, name='centre')
    code = _stack(net, net['centre'], cnn_rows())
    net['pool'] = GlobalPoolLayer(code, name='pool')
    return _outputs(net, DenseLayer(net['pool'], num_classes,
                                    nonlinearity=identity,
                                    name='class_scores'))


def build_model(model, num_classes=10, input_shape=(3, 32, 32),
                input_var=None):
    """Any of MODELS by name, as the command line names them."""
    if model == 'cnn':
        return build_cnn(num_classes, input_shape, input_var)
    if model == 'resnet20':
        from .resnet import build_resnet20  # it builds on this module
        return build_resnet20(num_classes, input_shape, input_var)
    if model not in MODELS:
        raise ValueError('unknown model %r (choose from %s)'
                         % (model, ', '.join(MODELS)))
    return build_gcm(num_classes, input_shape,
                     decoder='basic' if model == 'gcm-basic' else 'shared',
                     clip=model == 'gcm-clip', input_var=input_var)
