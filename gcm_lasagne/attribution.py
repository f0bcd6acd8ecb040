"""Per-pixel attribution maps of a model's decision, for faithfulness tests
(gcm_lasagne/faithfulness.py) and for comparing GCM with the usual methods.

Every method gives, for images X (B, D, R, C) in [0, 1] and a target class
per image, a map (B, R, C): larger means "more evidence for the target".
Maps are numpy in, numpy out; the Theano functions behind them are compiled
once per model and reused (gradient, gradient x input and Integrated
Gradients share one).

The class score is the PRE-softmax score (`net['class_scores']`): GCM's is
the CCM's mean (Eq. 3), the CNN's the dense layer's output. Gradients of the
softmax would mix in every other class's score.

Methods:
- 'ccm' (GCM): the target's Class Contribution Map summed over channels,
  CWM_t * sum_d I_d. Its pixel sum is rows x cols x channels x the class
  score, exactly (Eq. 3 is a mean).
- 'cwm' (GCM): the target's Class Weight Map.
- 'gradient': Simonyan et al.'s saliency, max over channels of
  |d score / d pixel|. Unsigned: a gradient's sign says which way a change
  would move the score, not whether the pixel is evidence.
- 'gradient-x-input': sum over channels of pixel x gradient.
- 'integrated-gradients': Sundararajan et al., black baseline, the path
  integral by the midpoint rule with `ig_steps` points, summed over
  channels. Its completeness error (sum of the map minus
  score(X) - score(black)) is returned by `integrated_gradients`.
- 'random': uniform noise, the floor every method must beat. It depends on
  the image's bytes and the seed only, not on the model or the batch, so
  the randomisation check leaves it unchanged by construction.
- 'cam' (CNN): Zhou et al.'s Class Activation Map, the last convolution's
  features weighted by the dense layer's weights for the class, upsampled
  bilinearly to the input (signed).
- 'grad-cam' (CNN): Selvaraju et al. on the last convolution: features
  weighted by their spatially averaged score gradient, upsampled, then the
  ReLU. Behind global average pooling the gradient is W[:, t] / (h w), so
  Grad-CAM = ReLU(CAM) / (h w) (tests/test_attribution.py).
"""
import zlib

import numpy as np

from . import arguments
from .batches import to_float
from .errors import InputError

GCM_METHODS = ('ccm', 'cwm')
ANY_METHODS = ('gradient', 'gradient-x-input', 'integrated-gradients',
               'random')
CNN_METHODS = ('cam', 'grad-cam')
METHODS = GCM_METHODS + ANY_METHODS + CNN_METHODS


class AttributionError(InputError):
    """A one-line reason why a map cannot be made (unknown method, a method
    the model does not have, images of the wrong shape)."""


def is_gcm(net):
    return 'class_weight_map' in net


def is_cam_network(net):
    """Global average pooling then one dense layer: the CNN baseline."""
    return 'pool' in net and 'class_scores' in net and hasattr(
        net['class_scores'], 'W')


def methods_for(net):
    """The methods that apply to this network, in METHODS order."""
    return tuple(m for m in METHODS
                 if (m not in GCM_METHODS or is_gcm(net))
                 and (m not in CNN_METHODS or is_cam_network(net)))


def check_method(net, method, model_name='this model'):
    if method not in METHODS:
        raise AttributionError('unknown method %r (choose from %s)'
                               % (method, ', '.join(METHODS)))
    if method not in methods_for(net):
        needs = ('a GCM model (it reads the class weight map)'
                 if method in GCM_METHODS else
                 'a network ending in global average pooling and a dense '
                 'layer (the CNN baseline)')
        raise AttributionError('method %r needs %s; %s is not one'
                               % (method, needs, model_name))


def bilinear_matrix(size_out, size_in):
    """(size_out, size_in) matrix of bilinear upsampling with pixel centres
    aligned (each output pixel at (o + 0.5) * size_in / size_out - 0.5,
    clamped at the edges). Upsampling a map is then U_r @ map @ U_c.T."""
    pos = (np.arange(size_out) + 0.5) * size_in / float(size_out) - 0.5
    pos = np.clip(pos, 0, size_in - 1)
    low = np.floor(pos).astype(int)
    high = np.minimum(low + 1, size_in - 1)
    frac = pos - low
    U = np.zeros((size_out, size_in))
    np.add.at(U, (np.arange(size_out), low), 1 - frac)
    np.add.at(U, (np.arange(size_out), high), frac)
    return U


def random_map(image, shape, seed=0):
    rng = np.random.RandomState(
        (zlib.crc32(np.ascontiguousarray(image).tobytes()) + seed) % 2 ** 32)
    return rng.uniform(size=shape).astype(np.float32)


class Attribution(object):
    """The attribution maps of one network (a dict of Lasagne layers as
    models.build_model or checkpoint.load give). Parameters are read from
    the network's shared variables at every call, so the maps follow
    `set_value` (the randomisation check relies on it). ig_steps and
    batch_size are positive ints, seed an int in 0..2**32-1 (of the
    'random' maps)."""

    def __init__(self, net, ig_steps=32, seed=0, batch_size=100,
                 name='this model'):
        if not isinstance(net, dict) or not {'input', 'class_scores',
                                             'prob'} <= set(net):
            raise AttributionError('net must be a dict of Lasagne layers '
                                   'with input, class_scores and prob, as '
                                   'models.build_model gives it')
        self.net = net
        self.ig_steps = arguments.positive_int('ig_steps', ig_steps)
        self.seed = arguments.seed('seed', seed)
        self.batch_size = arguments.positive_int('batch_size', batch_size)
        self.name = name
        self.methods = methods_for(net)
        self.input_shape = tuple(net['input'].shape[1:])
        self._fns = {}

    # ------------------------------------------------ compiled functions

    def _fn(self, key):
        if key not in self._fns:
            self._fns[key] = self._compile(key)
        return self._fns[key]

    def _compile(self, key):
        import theano
        import theano.tensor as T
        # the inference graph, each BN folded into its convolution; it
        # reads the shared variables, so maps follow set_value
        from .inference import get_output
        net, X = self.net, self.net['input'].input_var
        target = T.ivector('target')
        if key == 'scores':
            outs = get_output([net['class_scores'], net['prob']])
            return theano.function([X], outs)
        if key == 'cwm':
            return theano.function([X, target], get_output(
                net['class_weight_map'])[T.arange(X.shape[0]), target])
        if key == 'gradient':
            scores = get_output(net['class_scores'])
            chosen = scores[T.arange(X.shape[0]), target]
            return theano.function([X, target],
                                   [chosen, T.grad(chosen.sum(), X)])
        if key == 'features':
            # the last convolution's output, which the pooling averages
            feats, scores = get_output([net['pool'].input_layer,
                                        net['class_scores']])
            chosen = scores[T.arange(X.shape[0]), target]
            return theano.function([X, target],
                                   [feats, T.grad(chosen.sum(), feats)])
        raise KeyError(key)

    # ------------------------------------------------ checks and batching

    def _inputs(self, X, targets=None):
        """X as float32 and targets as int32 class indices, one per image
        (integers: a float is refused, not truncated), or one line."""
        X = arguments.image_array(X, self.input_shape)
        if X.ndim != 4 or X.shape[1:] != self.input_shape:
            raise AttributionError(
                'images are %s but %s takes %s'
                % ('x'.join(map(str, X.shape[1:])), self.name,
                   'x'.join(map(str, self.input_shape))))
        if not len(X):
            raise AttributionError('no images')
        if X.dtype != np.uint8 and X.dtype.kind != 'f':
            raise AttributionError('images must be uint8 (pixels 0-255) or '
                                   'float (pixels in [0, 1]), not %s'
                                   % X.dtype)
        X = to_float(X)
        if targets is None:
            return X
        classes = self.net['class_scores'].output_shape[1]
        return X, arguments.class_indices('targets', targets, len(X),
                                          classes)

    def _batched(self, compute, X, targets):
        parts = [compute(X[i:i + self.batch_size],
                         targets[i:i + self.batch_size])
                 for i in range(0, len(X), self.batch_size)]
        if isinstance(parts[0], tuple):
            return tuple(np.concatenate(p) for p in zip(*parts))
        return np.concatenate(parts)

    # ------------------------------------------------ public

    def scores(self, X):
        """(pre-softmax class scores, softmax probabilities), (B, K) each."""
        X = self._inputs(X)
        fn = self._fn('scores')
        parts = [fn(X[i:i + self.batch_size])
                 for i in range(0, len(X), self.batch_size)]
        return tuple(np.concatenate(p) for p in zip(*parts))

    def maps(self, method, X, targets):
        """(B, R, C) float32 maps of `method` for the target classes."""
        check_method(self.net, method, self.name)
        X, targets = self._inputs(X, targets)
        if method == 'integrated-gradients':
            return self.integrated_gradients(X, targets)[0]
        compute = getattr(self, '_' + method.replace('-', '_'))
        return self._batched(compute, X, targets).astype(np.float32)

    def integrated_gradients(self, X, targets):
        """(maps (B, R, C), completeness error (B,)): the error is the
        map's sum minus (score(X) - score(black)), per image."""
        check_method(self.net, 'integrated-gradients', self.name)
        X, targets = self._inputs(X, targets)
        return self._batched(self._ig, X, targets)

    # ------------------------------------------------ the methods

    def _ccm(self, X, t):
        return self._fn('cwm')(X, t) * X.sum(axis=1)

    def _cwm(self, X, t):
        return self._fn('cwm')(X, t)

    def _gradient(self, X, t):
        return np.abs(self._fn('gradient')(X, t)[1]).max(axis=1)

    def _gradient_x_input(self, X, t):
        return (X * self._fn('gradient')(X, t)[1]).sum(axis=1)

    def _ig(self, X, t):
        fn = self._fn('gradient')
        total = np.zeros(X.shape, np.float64)
        for k in range(self.ig_steps):
            alpha = np.float32((k + 0.5) / self.ig_steps)
            total += fn(alpha * X, t)[1]
        ig = (X * total / self.ig_steps).sum(axis=1)
        score = fn(X, t)[0]
        black = fn(np.zeros_like(X), t)[0]
        error = ig.sum(axis=(1, 2)) - (score.astype(np.float64) - black)
        return ig.astype(np.float32), error

    def _random(self, X, t):
        return np.stack([random_map(x, x.shape[1:], self.seed) for x in X])

    def _cam_parts(self, X, t, gradient):
        feats, grads = self._fn('features')(X, t)
        if gradient:
            weights = grads.mean(axis=(2, 3))
        else:
            weights = self.net['class_scores'].W.get_value().T[t]
        coarse = np.einsum('bk,bkhw->bhw', weights, feats)
        rows, cols = self.input_shape[1:]
        U_r = bilinear_matrix(rows, coarse.shape[1])
        U_c = bilinear_matrix(cols, coarse.shape[2])
        return np.einsum('rh,bhw,cw->brc', U_r, coarse, U_c)

    def _cam(self, X, t):
        return self._cam_parts(X, t, gradient=False)

    def _grad_cam(self, X, t):
        return np.maximum(self._cam_parts(X, t, gradient=True), 0)
