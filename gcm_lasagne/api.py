"""A trained model from Python: load it, classify images, get its maps.

    import gcm_lasagne
    model = gcm_lasagne.load_model('models/gcm-cifar10jpeg/model.npz')
    images = gcm_lasagne.read_images(['cat.jpg', 'ship.png'],
                                     model.input_shape)
    label, scores, prob = model.predict(images)
    ccm = model.class_contribution_maps(images)     # (2, 10, 3, 32, 32)
    cam = cnn.class_activation_maps(images)         # (2, 10, 32, 32)

Images go in as numpy arrays (N, C, H, W) of the model's input_shape, either
uint8 with pixels 0-255 (what `read_images` gives) or float in [0, 1] (what
the network is fed, `batches.to_float`); anything else is an InputError (a
ValueError), so wrongly scaled pixels are never classified silently.
Every other argument is checked too (arguments.py): a bad one is a
ValueError, or a TypeError for a wrong type, naming it and what it must be.
Results come out as float32 numpy arrays, computed batch by batch by Theano
functions (one for the scores, one for the maps too) compiled at first use and
then reused, in inference mode (batch norm with its running averages, folded
into the convolutions: inference.py). A model without CCMs (the CNN baseline,
resnet20) is explained by its Class Activation Maps (Zhou et al.; Grad-CAM on
request), drawn by gcm_lasagne/attribution.py, the module the faithfulness
figures use. The command line's `explain`, `figures`, `compare`, `demo` and
`evaluate` go through this module.
"""
import collections
import os

import numpy as np
import theano

from . import arguments, attribution, batches, checkpoint, inference
from .errors import InputError, InputTypeError

# what Model.explain returns and `explain` saves per image
MAP_KEYS = ('class_weight_map', 'class_contribution_map', 'class_scores',
            'prob')
SCORE_KEYS = MAP_KEYS[2:]
# what Model.explain returns for a model explained by CAM or Grad-CAM
CAM_KEYS = ('class_activation_map',) + SCORE_KEYS
# the maps a figure draws for every class: GCM's own, or CAM's two kinds
FIGURE_METHODS = ('ccm',) + attribution.CNN_METHODS

Prediction = collections.namedtuple('Prediction', 'label class_scores prob')
Prediction.__doc__ = """What `Model.predict` returns: label (N,) int64, the
predicted class as an index into model.classes; class_scores (N, K) float32
(for GCM the mean of each class's CCM, eq. 3); prob (N, K) float32, their
softmax."""


def load_model(path):
    """The model in a file written by training (model.npz, or a run's
    checkpoint.npz) as a `Model`. A missing or foreign file raises
    checkpoint.CheckpointError."""
    if not isinstance(path, (str, os.PathLike)):
        raise InputTypeError('path must be a file name (str or os.PathLike), '
                             'not %s' % type(path).__name__)
    net, meta, _ = checkpoint.load(path)
    return Model(net, meta)


class Model(object):
    """A trained network, ready to classify and explain numpy images.

    Parameters
    ----------
    net : dict of Lasagne layers, as `models.build_model` builds it and
        `checkpoint.load` returns it (keys 'input', 'class_scores', 'prob'
        and for GCM 'class_weight_map', 'class_contribution_map').
    meta : dict with 'model' (the kind), 'classes' and 'input_shape', as
        a model file stores it (training also stores its 'config').
    batch_size : images per call of the compiled function, a positive
        int; each method's batch_size overrides it for that call.

    Attributes
    ----------
    kind : 'gcm', 'gcm-clip', 'gcm-basic', 'cnn' or 'resnet20' (a control).
    classes : list of the K class names; a label indexes it.
    input_shape : (C, H, W) of one image.
    has_maps : True for the GCM kinds (they draw CWMs and CCMs).
    figure_methods : the maps drawn of every class in a Figure 6 layout:
        ('ccm',) for GCM, ('cam', 'grad-cam') for a network ending in
        global average pooling and a dense layer, () for any other; the
        first is what `explain` and `figures` draw unless asked otherwise.
    net, meta : as given.
    """

    def __init__(self, net, meta, batch_size=100):
        _check_model(net, meta)
        self.net, self.meta = net, meta
        self.kind = meta['model']
        self.classes = list(meta['classes'])
        self.input_shape = tuple(meta['input_shape'])
        self.has_maps = 'class_contribution_map' in net
        self.figure_methods = tuple(m for m in FIGURE_METHODS
                                    if m in attribution.methods_for(net))
        self.batch_size = arguments.positive_int('batch_size', batch_size)
        self._fns = {}
        self._attribution = None

    def __repr__(self):
        return '<Model %s: %d classes, input %s>' % (
            self.kind, len(self.classes), self.input_shape)

    # ------------------------------------------------------------ public

    def predict(self, images, batch_size=None):
        """Classify images (N, C, H, W), uint8 0-255 or float in [0, 1].
        Returns Prediction(label (N,), class_scores (N, K), prob (N, K))."""
        out = self._run(images, SCORE_KEYS, batch_size)
        return Prediction(out['class_scores'].argmax(axis=1),
                          out['class_scores'], out['prob'])

    def class_weight_maps(self, images, batch_size=None):
        """Class Weight Maps (N, K, H, W) float32 of images (N, C, H, W):
        one map per class at input resolution (GCM kinds only)."""
        return self._maps(images, 'class_weight_map', batch_size)

    def class_contribution_maps(self, images, batch_size=None):
        """Class Contribution Maps (N, K, C, H, W) float32 of images
        (N, C, H, W): each class's CWM times the image (as float in
        [0, 1]); the mean of a class's CCM is its class score. GCM kinds
        only. All of a CIFAR-10 test set is 1.2 GB: pass a few images."""
        return self._maps(images, 'class_contribution_map', batch_size)

    def class_activation_maps(self, images, method='cam', batch_size=None):
        """Every class's Class Activation Map (N, K, H, W) float32 of images
        (N, C, H, W): method 'cam' (Zhou et al.: the last convolution's
        features weighted by the dense layer's weights of the class,
        upsampled bilinearly; signed, and its mean plus the class's bias is
        the class score) or 'grad-cam' (Selvaraju et al.; never negative).
        The maps are attribution.Attribution's, one class at a time. For
        a network ending in global average pooling and a dense layer (the
        CNN baseline, resnet20); a GCM has CCMs instead."""
        X = self.check_images(images)
        if method not in attribution.CNN_METHODS:
            raise InputError('method must be one of %s, not %r'
                             % (', '.join(attribution.CNN_METHODS), method))
        return np.stack([self.attribution_maps(X, method,
                                               np.full(len(X), j),
                                               batch_size)
                         for j in range(len(self.classes))], axis=1)

    def attribution_maps(self, images, method, targets=None,
                         batch_size=None):
        """(N, H, W) float32 maps of any attribution method that applies
        to this model (attribution.methods_for: for GCM 'ccm', its CCM
        summed over channels, and 'cwm'; for all 'gradient',
        'gradient-x-input', 'integrated-gradients', 'random'; 'cam' and
        'grad-cam' as in class_activation_maps) for each image's target
        class (N,) (integers, by default the predicted classes)."""
        X = self.check_images(images)
        size = self._batch(batch_size)
        if self._attribution is None:
            self._attribution = attribution.Attribution(
                self.net, name='this %s model' % self.kind)
        attribution.check_method(self.net, method, self._attribution.name)
        if targets is None:
            targets = self.predict(X, size).label
        targets = arguments.class_indices('targets', targets, len(X),
                                          len(self.classes))
        self._attribution.batch_size = size
        return self._attribution.maps(method, X, targets)

    def explain(self, images, batch_size=None, method=None):
        """All of it in one pass, as `explain` saves it, float32. A GCM
        (method None or 'ccm'): a dict of class_weight_map (N, K, H, W),
        class_contribution_map (N, K, C, H, W), class_scores (N, K) and
        prob (N, K). A model with CAM (method None: 'cam', or 'grad-cam'):
        class_activation_map (N, K, H, W), class_scores and prob."""
        method = self.figure_method(method)
        if method == 'ccm':
            return self._run(images, MAP_KEYS, batch_size)
        out = self._run(images, SCORE_KEYS, batch_size)
        out['class_activation_map'] = self.class_activation_maps(
            images, method, batch_size)
        return {k: out[k] for k in CAM_KEYS}

    def figure_method(self, method=None):
        """The map drawn of every class: `method` if this model has it,
        else InputError; None: this model's first of figure_methods."""
        if not self.figure_methods:
            raise InputError('this %s model has neither contribution maps '
                             'nor class activation maps (CAM needs global '
                             'average pooling then a dense layer)'
                             % self.kind)
        if method is None:
            return self.figure_methods[0]
        if method not in self.figure_methods:
            raise InputError('this %s model is explained by %s, not %r'
                             % (self.kind, ' or '.join(self.figure_methods),
                                method))
        return method

    def evaluate(self, images, labels, batch_size=None):
        """(mean cross-entropy loss, Prediction) on labelled images (labels:
        one integer class index per image); the loss is the training
        objective's, from the class scores."""
        X = self.check_images(images)
        labels = arguments.class_indices('labels', labels, len(X),
                                         len(self.classes))
        p = self.predict(X, batch_size)
        s = p.class_scores.astype(np.float64)
        top = s.max(axis=1)
        log_sum = top + np.log(np.exp(s - top[:, None]).sum(axis=1))
        return float(np.mean(log_sum - s[np.arange(len(s)), labels])), p

    def require_maps(self):
        """Raise InputError unless this model draws maps (a GCM kind)."""
        if not self.has_maps:
            raise InputError('this %s model has no class weight or '
                             'contribution maps; use a GCM model (gcm, '
                             'gcm-clip or gcm-basic)%s' % (
                                 self.kind, ', or its class_activation_maps'
                                 if self.figure_methods else ''))

    def check_images(self, images):
        """images as an array the network can take, or InputError: an array
        (N, C, H, W), or a list of (C, H, W) images of one dtype."""
        X = arguments.image_array(images, self.input_shape)
        if X.ndim != 4 or X.shape[1:] != self.input_shape:
            hint = ''
            if X.shape == self.input_shape:
                hint = ' (one image? pass images[None])'
            elif X.ndim == 4 and X.shape[1:] == (self.input_shape[1:]
                                                 + self.input_shape[:1]):
                hint = ' (channels last? pass images.transpose(0, 3, 1, 2))'
            raise InputError('images must be an array of shape (N, %s) for '
                             'this model, not %s%s' % (
                                 ', '.join(map(str, self.input_shape)),
                                 X.shape, hint))
        if not len(X):
            raise InputError('images holds no image')
        if X.dtype == np.uint8:
            return X
        if X.dtype.kind != 'f':
            raise InputError('images must be uint8 (pixels 0-255) or float '
                             '(pixels in [0, 1]), not %s' % X.dtype)
        low, high = X.min(), X.max()
        if not (low >= 0 and high <= 1):  # also false for NaN
            raise InputError('float images must have pixels in [0, 1] (give '
                             'uint8 for 0-255), but these range from %g to %g'
                             % (low, high))
        return X

    # ------------------------------------------------------------ inside

    def _batch(self, batch_size):
        """A call's batch size: its own if given (checked), else the
        model's. 0 is refused, not taken for 'the default'."""
        if batch_size is None:
            return self.batch_size
        return arguments.positive_int('batch_size', batch_size)

    def _maps(self, images, key, batch_size):
        self.require_maps()
        return self._run(images, (key,), batch_size)[key]

    def _function(self, wanted):
        """(output keys, theano function) giving at least the keys wanted,
        compiled at first use: one for the scores alone (so classifying
        does not draw the 5-D CCMs) and one for everything."""
        keys = SCORE_KEYS if set(wanted) <= set(SCORE_KEYS) else MAP_KEYS
        if keys not in self._fns:
            outputs = inference.get_output([self.net[k] for k in keys])
            self._fns[keys] = theano.function(
                [self.net['input'].input_var], outputs)
        return keys, self._fns[keys]

    def _run(self, images, wanted, batch_size):
        """{key: float32 array} for the keys wanted, batch by batch; only
        those are kept."""
        X = self.check_images(images)
        size = self._batch(batch_size)
        keys, fn = self._function(wanted)
        parts = {k: [] for k in wanted}
        for i in range(0, len(X), size):
            out = dict(zip(keys, fn(batches.to_float(X[i:i + size]))))
            for k in wanted:
                parts[k].append(out[k])
        return {k: np.concatenate(v).astype(np.float32, copy=False)
                for k, v in parts.items()}


def _check_model(net, meta):
    """Model's net and meta agree with each other and hold what it reads,
    or one line saying what is missing (not a KeyError from inside)."""
    if not isinstance(meta, dict) or not {'model', 'classes',
                                          'input_shape'} <= set(meta):
        raise InputError('meta must be a dict with model, classes and '
                         'input_shape, as a model file stores it '
                         '(checkpoint.load gives it)')
    if not isinstance(net, dict) or not {'input', 'class_scores',
                                         'prob'} <= set(net):
        raise InputError('net must be a dict of Lasagne layers with input, '
                         'class_scores and prob, as models.build_model and '
                         'checkpoint.load give it')
    classes = net['class_scores'].output_shape[1]
    shape = tuple(net['input'].shape[1:])
    if classes != len(meta['classes']) or shape != tuple(meta['input_shape']):
        raise InputError('net and meta disagree: the net has %d classes and '
                         'input %s, meta %d and %s' % (
                             classes, shape, len(meta['classes']),
                             tuple(meta['input_shape'])))
