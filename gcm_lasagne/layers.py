"""The two layers that make a decoder's output a classifier (Sec. 3.1-3.2)."""
from lasagne import init
from lasagne.layers import Layer, MergeLayer


class ClassContributionMapLayer(MergeLayer):
    """Eq. 2: CCM_j = Tile(CWM_j) (x) I.

    Inputs: the Class Weight Maps (batch, N, R, C) and the image
    (batch, D, R, C). Output: the Class Contribution Maps (batch, N, D, R, C),
    each class's map copied over the image's D channels and multiplied with
    the image pixel by pixel.
    """

    def __init__(self, class_weight_map, image, **kwargs):
        super().__init__([class_weight_map, image], **kwargs)

    def get_output_shape_for(self, input_shapes):
        (batch, classes, rows, cols), (_, channels, _, _) = input_shapes
        return (batch, classes, channels, rows, cols)

    def get_output_for(self, inputs, **kwargs):
        class_weight_map, image = inputs
        ccm = (class_weight_map.dimshuffle(0, 1, 'x', 2, 3)
               * image.dimshuffle(0, 'x', 1, 2, 3))
        # ClassScoreLayer reads the factors from here: the score needs no
        # (batch, N, D, R, C) array (docs/performance.md).
        ccm.tag.class_contribution_factors = (class_weight_map, image)
        return ccm


class ClassScoreLayer(Layer):
    """Eq. 3: the class score V_j is the plain mean of CCM_j over its
    channels and pixels, so the CCM is an exact additive decomposition of
    the score. Output: (batch, N), the logits of the softmax."""

    def get_output_shape_for(self, input_shape):
        return input_shape[:2]

    def get_output_for(self, class_contribution_map, **kwargs):
        factors = getattr(class_contribution_map.tag,
                          'class_contribution_factors', None)
        if factors is None:
            return class_contribution_map.mean(axis=(2, 3, 4))
        # The same number without materialising the CCM:
        # mean_{d,r,c} CWM_j[r,c] I[d,r,c] = mean_{r,c} CWM_j[r,c] mean_d I[d,r,c]
        # (the image's channel mean is computed once, not once per class,
        # and the gradient needs no (batch, N, D, R, C) array either).
        class_weight_map, image = factors
        return (class_weight_map
                * image.mean(axis=1).dimshuffle(0, 'x', 1, 2)).mean(axis=(2, 3))


class PixelMeanLayer(Layer):
    """Subtracts the training set's per-pixel mean image (the CNN baseline's
    centring, Sec. 4.4). The mean is a non-trainable parameter, so it is
    saved and loaded with the weights and every later use sees the same one.
    Set it with `layer.pixel_mean.set_value(mean)` before training."""

    def __init__(self, incoming, **kwargs):
        super().__init__(incoming, **kwargs)
        self.pixel_mean = self.add_param(
            init.Constant(0), self.input_shape[1:], 'pixel_mean',
            trainable=False, regularizable=False)

    def get_output_for(self, input, **kwargs):
        return input - self.pixel_mean.dimshuffle('x', 0, 1, 2)
