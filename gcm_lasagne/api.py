"""A trained model from Python: load it, classify images, get its maps.

    import gcm_lasagne
    model = gcm_lasagne.load_model('models/gcm-cifar10jpeg/model.npz')
    images = gcm_lasagne.read_images(['cat.jpg', 'ship.png'],
                                     model.input_shape)
    label, scores, prob = model.predict(images)
    ccm = model.class_contribution_maps(images)     # (2, 10, 3, 32, 32)

Images go in as numpy arrays (N, C, H, W) of the model's input_shape, either
uint8 with pixels 0-255 (what `read_images` gives) or float in [0, 1] (what
the network is fed, `batches.to_float`); anything else is an InputError (a
ValueError), so wrongly scaled pixels are never classified silently.
Results come out as float32 numpy arrays, computed batch by batch by
Theano functions (one for the scores, one for the maps too) compiled at
first use and then reused, in inference mode (batch norm with its running
averages). The command line's `explain`, `figures`, `demo` and `evaluate`
go through this module.
"""
import collections

import numpy as np
import lasagne
import theano

from . import batches, checkpoint
from .errors import InputError

# what Model.explain returns and `explain` saves per image
MAP_KEYS = ('class_weight_map', 'class_contribution_map', 'class_scores',
            'prob')
SCORE_KEYS = MAP_KEYS[2:]

Prediction = collections.namedtuple('Prediction', 'label class_scores prob')
Prediction.__doc__ = """What `Model.predict` returns: label (N,) int64, the
predicted class as an index into model.classes; class_scores (N, K) float32
(for GCM the mean of each class's CCM, eq. 3); prob (N, K) float32, their
softmax."""


def load_model(path):
    """The model in a file written by training (model.npz, or a run's
    checkpoint.npz) as a `Model`. A missing or foreign file raises
    checkpoint.CheckpointError."""
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
    batch_size : images per call of the compiled function.

    Attributes
    ----------
    kind : 'gcm', 'gcm-clip', 'gcm-basic', 'cnn' or 'resnet20' (a control).
    classes : list of the K class names; a label indexes it.
    input_shape : (C, H, W) of one image.
    has_maps : True for the GCM kinds (they draw CWMs and CCMs).
    net, meta : as given.
    """

    def __init__(self, net, meta, batch_size=100):
        self.net, self.meta = net, meta
        self.kind = meta['model']
        self.classes = list(meta['classes'])
        self.input_shape = tuple(meta['input_shape'])
        self.has_maps = 'class_contribution_map' in net
        self.batch_size = batch_size
        self._fns = {}

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

    def explain(self, images, batch_size=None):
        """All of it in one pass, as `explain` saves it: a dict of
        class_weight_map (N, K, H, W), class_contribution_map
        (N, K, C, H, W), class_scores (N, K) and prob (N, K), float32.
        GCM kinds only."""
        self.require_maps()
        return self._run(images, MAP_KEYS, batch_size)

    def evaluate(self, images, labels, batch_size=None):
        """(mean cross-entropy loss, Prediction) on labelled images; the
        loss is the training objective's, from the class scores."""
        labels = np.asarray(labels)
        p = self.predict(images, batch_size)
        if labels.shape != p.label.shape or labels.dtype.kind not in 'iu':
            raise InputError('labels must be %d integers, one per image, not '
                             '%s %s' % (len(p.label), labels.dtype,
                                        labels.shape))
        if labels.min() < 0 or labels.max() >= len(self.classes):
            raise InputError('labels must be class indices 0..%d'
                             % (len(self.classes) - 1))
        s = p.class_scores.astype(np.float64)
        top = s.max(axis=1)
        log_sum = top + np.log(np.exp(s - top[:, None]).sum(axis=1))
        return float(np.mean(log_sum - s[np.arange(len(s)), labels])), p

    def require_maps(self):
        """Raise InputError unless this model draws maps (a GCM kind)."""
        if not self.has_maps:
            raise InputError('this %s model has no class weight or '
                             'contribution maps; use a GCM model (gcm, '
                             'gcm-clip or gcm-basic)' % self.kind)

    def check_images(self, images):
        """images as an array the network can take, or InputError."""
        X = np.asarray(images)
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

    def _maps(self, images, key, batch_size):
        self.require_maps()
        return self._run(images, (key,), batch_size)[key]

    def _function(self, wanted):
        """(output keys, theano function) giving at least the keys wanted,
        compiled at first use: one for the scores alone (so classifying
        does not draw the 5-D CCMs) and one for everything."""
        keys = SCORE_KEYS if set(wanted) <= set(SCORE_KEYS) else MAP_KEYS
        if keys not in self._fns:
            outputs = lasagne.layers.get_output([self.net[k] for k in keys],
                                                deterministic=True)
            self._fns[keys] = theano.function(
                [self.net['input'].input_var], outputs)
        return keys, self._fns[keys]

    def _run(self, images, wanted, batch_size):
        """{key: float32 array} for the keys wanted, batch by batch; only
        those are kept."""
        X = self.check_images(images)
        keys, fn = self._function(wanted)
        size = batch_size or self.batch_size
        parts = {k: [] for k in wanted}
        for i in range(0, len(X), size):
            out = dict(zip(keys, fn(batches.to_float(X[i:i + size]))))
            for k in wanted:
                parts[k].append(out[k])
        return {k: np.concatenate(v).astype(np.float32, copy=False)
                for k, v in parts.items()}
