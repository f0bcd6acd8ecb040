"""ResNet-20 of He et al. 2016 (Deep Residual Learning for Image
Recognition, Sec. 4.2), a control with a published CIFAR-10 result: not one
of the paper's networks. Trained here on the same data as GCM, its distance
from He et al.'s figure estimates what the data costs a network of this
size (docs/reproduction.md).

He et al.'s CIFAR-10 network with n = 3: a 3x3 convolution of 16, three
stages of n basic blocks at 16, 32 and 64 channels (the first block of
stages 2 and 3 halves the size with stride 2), global average pooling, a
dense layer, softmax: 6n + 2 = 20 weighted layers. Shortcuts are option A
(identity; where the size halves, subsampled by 2 and the new channels
zero: no parameters).
"""
import theano.tensor as T
from lasagne import init
from lasagne.layers import (DenseLayer, ElemwiseSumLayer, GlobalPoolLayer,
                            Layer, NonlinearityLayer)
from lasagne.nonlinearities import identity, rectify

from .compat import Conv2DLayer, batch_norm
from .layers import PixelMeanLayer
from .models import _input, _outputs

# (channels, blocks, stride of the stage's first block)
STAGES = ((16, 3, 1), (32, 3, 2), (64, 3, 2))
FIRST_CHANNELS = 16

# He et al. 2016, Table 6: 8.75% test error on the official CIFAR-10.
PUBLISHED = {'resnet20': {'params': '0.27M', 'accuracy': 91.25,
                          'source': 'He et al. 2016, Table 6'}}

# He et al.'s CIFAR-10 recipe (Sec. 4.2) in this project's terms. Their
# 32k / 48k / 64k iterations at 391 batches an epoch (50,000 images, batch
# 128) are the rate's drops after epochs 82 and 123 and the end after 164.
# Their weight decay 1e-4 is added to the gradient (g + 1e-4 w); our
# weight_decay is the coefficient c of Lasagne's L2 penalty c * sum(w^2),
# whose gradient is 2 c w, so theirs is c = 5e-5 (tests/test_resnet.py
# checks one step by hand). The penalty covers what Lasagne tags
# regularizable: the convolution and dense weights and batch norm's gamma,
# not beta or the dense bias.
HE2016 = {
    'epochs': 164,
    'batch_size': 128,
    'momentum': 0.9,
    'learning_rate': 0.1,
    'lr_steps': (82, 123),
    'lr_factor': 0.1,
    'pad': 4,
    'flip': True,
    'weight_decay': 5e-5,
}

he_normal = init.HeNormal(gain='relu')


class ShortcutA(Layer):
    """Option A: the input subsampled by `stride`, its channels followed by
    zero channels up to `channels`."""

    def __init__(self, incoming, channels, stride, **kwargs):
        super().__init__(incoming, **kwargs)
        self.channels, self.stride = channels, stride

    def get_output_shape_for(self, input_shape):
        batch, _, rows, cols = input_shape
        return (batch, self.channels,
                rows and -(-rows // self.stride), cols and -(-cols // self.stride))

    def get_output_for(self, input, **kwargs):
        kept = input[:, :, ::self.stride, ::self.stride]
        extra = self.channels - self.input_shape[1]
        if not extra:
            return kept
        zeros = T.zeros((kept.shape[0], extra, kept.shape[2], kept.shape[3]),
                        dtype=input.dtype)
        return T.concatenate([kept, zeros], axis=1)


def _conv_bn(incoming, channels, stride, nonlinearity, name):
    return batch_norm(Conv2DLayer(incoming, channels, 3, stride=stride,
                                  pad='same', W=he_normal,
                                  nonlinearity=nonlinearity, name=name))


def _block(incoming, channels, stride, name):
    """conv-BN-ReLU, conv-BN, plus the shortcut, then ReLU."""
    residual = _conv_bn(incoming, channels, stride, rectify, name + '_conv1')
    residual = _conv_bn(residual, channels, 1, identity, name + '_conv2')
    shortcut = incoming
    if stride != 1 or channels != incoming.output_shape[1]:
        shortcut = ShortcutA(incoming, channels, stride,
                             name=name + '_shortcut')
    return NonlinearityLayer(ElemwiseSumLayer([residual, shortcut]), rectify,
                             name=name)


def build_resnet20(num_classes=10, input_shape=(3, 32, 32), input_var=None):
    """ResNet-20 as a dict of named layers ('input', 'centre', 'conv1',
    'stage<s>_block<b>', 'pool', 'class_scores', 'prob'), its input centred
    by the training set's per-pixel mean like the CNN baseline's."""
    net = {}
    image = _input(net, num_classes, input_shape, input_var)
    net['centre'] = PixelMeanLayer(image, name='centre')
    layer = net['conv1'] = _conv_bn(net['centre'], FIRST_CHANNELS, 1,
                                    rectify, 'conv1')
    for s, (channels, blocks, stride) in enumerate(STAGES, 1):
        for b in range(1, blocks + 1):
            name = 'stage%d_block%d' % (s, b)
            layer = net[name] = _block(layer, channels,
                                       stride if b == 1 else 1, name)
    net['pool'] = GlobalPoolLayer(layer, name='pool')
    return _outputs(net, DenseLayer(net['pool'], num_classes, W=he_normal,
                                    nonlinearity=identity,
                                    name='class_scores'))
