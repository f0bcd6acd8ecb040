"""The inference graph with each batch norm folded into its convolution
(gcm_lasagne.inference) against the unfolded deterministic graph, for every
model, with running statistics that are not the initial ones; that it
compiles to convolutions without batch-norm ops; that it follows the
parameters after they change; and that the callers use it."""
import os
import subprocess
import sys

import lasagne
import numpy as np
import pytest
import theano
import theano.tensor as T
from lasagne.nonlinearities import identity, rectify
from theano.tensor.nnet import bn as theano_bn

from gcm_lasagne import (api, attribution, checkpoint, convfuse, fastbn,
                         inference, train)
from gcm_lasagne.compat import BatchNormLayer
from gcm_lasagne.models import MODELS, build_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPE, CLASSES, BATCH = (3, 12, 16), 4, 6
# Float32 rounding only: measured differences are about 1e-6 of the
# output's scale; the fold changes the order of two roundings per layer.
RTOL, ATOL = 1e-4, 1e-5  # ATOL times the largest |value| of the output


def batch_norms(net):
    return [l for l in lasagne.layers.get_all_layers(net['prob'])
            if isinstance(l, BatchNormLayer)]


def keys_of(net):
    """The outputs the callers compile: probabilities and scores, GCM's
    maps, and for CAM the features the pooling averages."""
    if 'class_weight_map' in net:
        return ['prob', 'class_scores', 'class_weight_map',
                'class_contribution_map']
    return ['prob', 'class_scores', 'features']


def layers_of(net, keys):
    return [net['pool'].input_layer if k == 'features' else net[k]
            for k in keys]


def randomize(net, rng):
    """Running statistics near the batch's own (so that activations stay
    in a sane range through 14-19 layers) but not equal to them, nor to
    the initial 0 and 1; gamma of both signs; a random beta and pixel
    mean."""
    x = net['input'].input_var
    bns = batch_norms(net)
    if 'centre' in net:
        net['centre'].pixel_mean.set_value(
            rng.uniform(0.3, 0.7, SHAPE).astype('float32'))
    pre = theano.function([x], lasagne.layers.get_output(
        [bn.input_layer for bn in bns], deterministic=False,
        batch_norm_update_averages=False))(images(rng, 16))
    for bn, h in zip(bns, pre):
        std = h.std(axis=(0, 2, 3)) + 1e-3
        c = len(std)
        bn.mean.set_value((h.mean(axis=(0, 2, 3))
                           + rng.normal(0, 0.3, c) * std).astype('float32'))
        bn.inv_std.set_value((rng.uniform(0.7, 1.4, c) / std).astype(
            'float32'))
        sign = np.where(rng.uniform(size=c) < 0.2, -1, 1)
        bn.gamma.set_value((sign * rng.uniform(0.6, 1.4, c)).astype(
            'float32'))
        bn.beta.set_value(rng.normal(0, 0.3, c).astype('float32'))


def images(rng, n=BATCH):
    return rng.uniform(0, 1, (n,) + SHAPE).astype('float32')


def ops(fn):
    return [node.op for node in fn.maker.fgraph.toposort()]


def count(fn, kind):
    return sum(isinstance(op, kind) for op in ops(fn))


FUSED = (convfuse.FastCorrMMBias, convfuse.FastCorrMM_gradInputsBias)
BN_OPS = (fastbn.BatchNormInfer, fastbn.BatchNormTrain,
          fastbn.BatchNormTrainGrad, theano_bn.AbstractBatchNormInference,
          theano_bn.AbstractBatchNormTrain)


def assert_same(folded, unfolded, keys):
    for key, a, b in zip(keys, folded, unfolded):
        assert a.shape == b.shape, key
        np.testing.assert_allclose(a, b, rtol=RTOL,
                                   atol=ATOL * np.abs(b).max(), err_msg=key)


@pytest.fixture(scope='module', params=MODELS)
def case(request):
    rng = np.random.RandomState(MODELS.index(request.param))
    lasagne.random.set_rng(rng)  # the initial weights too: reproducible
    x = T.tensor4('x')
    net = build_model(request.param, CLASSES, SHAPE, input_var=x)
    randomize(net, rng)
    keys = keys_of(net)
    layers = layers_of(net, keys)
    unfolded = theano.function([x], lasagne.layers.get_output(
        layers, deterministic=True))
    folded = theano.function([x], inference.get_output(layers))
    return dict(model=request.param, net=net, keys=keys, rng=rng,
                unfolded=unfolded, folded=folded, X=images(rng))


def test_folded_equals_unfolded(case):
    X, keys = case['X'], case['keys']
    unfolded = case['unfolded'](X)
    assert_same(case['folded'](X), unfolded, keys)
    # the comparison means something: statistics are not the initial ones
    # and the classifier is neither saturated nor dead
    for bn in batch_norms(case['net']):
        assert not np.allclose(bn.mean.get_value(), 0)
        assert not np.allclose(bn.inv_std.get_value(), 1)
    prob, maps = unfolded[0], unfolded[2]
    assert np.median(prob.max(axis=1)) < 0.9999
    assert np.ptp(prob, axis=0).max() > 1e-3
    assert maps.std(axis=0).max() > 1e-3 * np.abs(maps).max()


def test_the_folded_graph_has_convolutions_and_no_batch_norm(case):
    folded, unfolded = case['folded'], case['unfolded']
    n = len(batch_norms(case['net']))
    assert count(unfolded, fastbn.BatchNormInfer) == n  # what was folded
    assert not any(isinstance(op, BN_OPS) for op in ops(folded))
    # each BN became its convolution's bias (+ ReLU), inside that
    # convolution (convfuse.py); the convolutions are the same
    assert count(folded, fastbn.BiasAdd) == 0
    assert count(folded, FUSED) == n
    convs = [type(op).__name__ for op in ops(unfolded)
             if 'Corr' in type(op).__name__]
    assert sorted(type(op).__name__.replace('Bias', '')
                  for op in ops(folded)
                  if 'Corr' in type(op).__name__) == sorted(convs)
    assert len(convs) >= n
    # what the fold adds is per-channel and per-weight work (W * s, the
    # bias): on the images, the BatchNormInfer ops are gone, and otherwise
    # one op for one
    expected = {k: v for k, v in on_images(unfolded).items()
                if 'BatchNormInfer' not in k}
    assert on_images(folded) == expected


def on_images(fn):
    """How many ops of each kind work on something computed from the
    images, a fused convolution counted as the one it is."""
    tainted = {i.variable for i in fn.maker.inputs if not i.shared}
    kinds = {}
    for node in fn.maker.fgraph.toposort():
        if tainted.intersection(node.inputs):
            tainted.update(node.outputs)
            name = str(node.op).replace('Bias{', '{')
            kinds[name] = kinds.get(name, 0) + 1
    return kinds


SHIPPED = sorted(os.path.join(ROOT, 'models', name, 'model.npz')
                 for name in os.listdir(os.path.join(ROOT, 'models')))


@pytest.mark.parametrize('path', SHIPPED, ids=lambda p: p.split(os.sep)[-2])
def test_the_shipped_models_trained_statistics_fold_too(path):
    """The statistics of full training runs, here on random images (on
    the JPEG test set, measured once: the same label for all 10,000
    images, probabilities within 1.8e-5, scores within 1.2e-6 of their
    scale)."""
    net, _, _ = checkpoint.load(path)
    keys = keys_of(net)
    layers = layers_of(net, keys)
    x = net['input'].input_var
    X = np.random.RandomState(3).uniform(
        0, 1, (20,) + tuple(net['input'].shape[1:])).astype('float32')
    assert_same(theano.function([x], inference.get_output(layers))(X),
                theano.function([x], lasagne.layers.get_output(
                    layers, deterministic=True))(X), keys)


def test_every_batch_norm_of_every_model_is_folded():
    for model in MODELS:
        net = build_model(model, CLASSES, SHAPE)
        assert all(inference.foldable(bn) for bn in batch_norms(net)), model


def test_folding_copies_no_graph_upstream_of_a_convolution():
    """Each fold rebuilds the convolution's node and nothing before it:
    a copy of the whole graph per layer, with ResNet-20's shortcuts using
    each block's input twice, made its gradient graph grow exponentially."""
    net = build_model('resnet20', CLASSES, SHAPE)
    size = [len(theano.gof.graph.io_toposort(
        [net['input'].input_var], [out])) for out in (
        lasagne.layers.get_output(net['prob'], deterministic=True),
        inference.get_output(net['prob']))]
    # per BN: the scale, the bias and W * s, a few small ops each
    assert size[1] <= size[0] + 8 * len(batch_norms(net))


def test_the_folded_function_follows_new_parameter_values(case):
    """Compiled once, as train.py's evaluation is: after the parameters
    move (training, a checkpoint loaded), it gives the new numbers."""
    X, keys, rng = case['X'], case['keys'], case['rng']
    before = case['folded'](X)
    randomize(case['net'], rng)
    conv = batch_norms(case['net'])[0].input_layer
    conv.W.set_value(conv.W.get_value() * 1.5)
    after = case['folded'](X)
    assert not np.allclose(after[1], before[1])
    assert_same(after, case['unfolded'](X), keys)


def relu_inputs(net, get_output):
    """What each ReLU of the network rectifies, as get_output builds it
    (folded or not): the ReLU's layer made the identity for a moment."""
    inputs = []
    for layer in lasagne.layers.get_all_layers(net['prob']):
        if getattr(layer, 'nonlinearity', None) is rectify:
            layer.nonlinearity = identity
            try:
                inputs.append(get_output(layer))
            finally:
                layer.nonlinearity = rectify
    return inputs


def same_side_of_every_kink(net, X):
    """Per image, whether every ReLU's input has the same sign (-, 0 or +)
    in the folded and the unfolded graph."""
    x = net['input'].input_var
    folded = theano.function([x], relu_inputs(net, inference.get_output))
    unfolded = theano.function([x], relu_inputs(
        net, lambda l: lasagne.layers.get_output(l, deterministic=True)))
    same = [(np.sign(a) == np.sign(b)).reshape(len(X), -1).all(axis=1)
            for a, b in zip(folded(X), unfolded(X))]
    return np.all(same, axis=0)


def test_gradients_through_the_folded_graph_are_the_unfolded_ones(case):
    """Gradient attributions (gradient, IG, Grad-CAM) run on it too.
    Compared on the images whose ReLU inputs all have the same sign in both
    graphs: where the fold's rounding puts a unit's input on the other side
    of its kink, or exactly on it, the gradients differ by that unit's
    share, legitimately (the slope there is rounding's choice; measured:
    up to 0.08).
    Measured on 40 batches of 6 per model: 11 of 1,200 images on another
    side, and every image whose gradients differed among them."""
    net, x = case['net'], case['net']['input'].input_var
    target = T.ivector('target')

    def gradient(scores):
        chosen = scores[T.arange(x.shape[0]), target]
        return theano.function([x, target], T.grad(chosen.sum(), x))
    unfolded = gradient(lasagne.layers.get_output(net['class_scores'],
                                                  deterministic=True))
    folded = gradient(inference.get_output(net['class_scores']))
    t = np.arange(BATCH, dtype='int32') % CLASSES
    same = same_side_of_every_kink(net, case['X'])
    assert same.sum() >= BATCH // 2
    assert_same([folded(case['X'], t)[same]],
                [unfolded(case['X'], t)[same]], ['grad'])


def test_the_callers_compile_the_folded_graph(tmp_path):
    """Evaluation during training, Model.predict and the maps, and the
    attribution functions of the faithfulness tables."""
    x = T.tensor4('x')
    net = build_model('gcm', CLASSES, (3, 8, 8), input_var=x)
    fns = [train.compile_eval(net)]
    model = api.Model(net, {'model': 'gcm', 'classes': list('abcd'),
                            'input_shape': [3, 8, 8]})
    X = np.zeros((2, 3, 8, 8), np.uint8)
    model.predict(X)
    model.class_contribution_maps(X)
    fns += list(model._fns.values())
    a = attribution.Attribution(net)
    fns += [a._fn(k) for k in ('scores', 'cwm', 'gradient')]
    for fn in fns:
        # each folded BN's bias and ReLU: in its convolution, or, where the
        # gradient reads the convolution's output, a BiasAdd of its own
        assert count(fn, fastbn.BiasAdd) + count(fn, FUSED) == 14
        assert not any(isinstance(op, BN_OPS) for op in ops(fn))


def _run_benchmark(name, *args):
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, 'benchmarks', name)] + list(args),
        capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return [line for line in done.stdout.splitlines() if line.startswith('|')]


def test_the_benchmarks_run():
    """benchmarks/folded_inference.py and inference_levels.py cannot
    silently break (tiny sizes; their numbers mean nothing here)."""
    rows = _run_benchmark('folded_inference.py', '--quick', '--models', 'gcm')
    assert [r.split('|')[2].strip() for r in rows[2:]] == [
        'unfolded', 'folded, fused', 'folded, BiasAdd',
        'folded, Theano elemwise', 'convs only']
    rows = _run_benchmark('inference_levels.py', '--rounds', '1', '--blocks',
                          '1', '--batches', '1', '--batch', '2', '--size',
                          '8', '--probe', '1', '--settings',
                          'default,batch-100')
    assert [r.split('|')[1].strip() for r in rows[-2:]] == [
        'default', 'batch-100']
