"""Issue 5: the throughput benchmark cannot silently break (its --quick mode
runs here; no timing is asserted), and the compiled training step of GCM is
the graph docs/performance.md describes: float32 only, this package's
convolutions (fastconv) and batch norm (fastbn) ops, no legacy ConvOp, no
(batch, N, D, R, C) Class Contribution Map."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import gcm_lasagne  # noqa: F401  (configures Theano)
import lasagne
import theano
import theano.tensor as T
from theano.tensor.nnet.conv import ConvOp

from gcm_lasagne.models import build_model
from gcm_lasagne.train import compile_train, default_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARK = os.path.join(ROOT, 'benchmarks', 'throughput.py')


def training_step(model, shape=(3, 8, 8), classes=3):
    """The training step exactly as gcm_lasagne.train compiles it."""
    net = build_model(model, num_classes=classes, input_shape=shape,
                      input_var=T.tensor4('x'))
    return compile_train(net, default_config(model=model))[0]


@pytest.fixture(scope='module')
def gcm_step():
    return training_step('gcm')


def test_training_graph_is_float32_and_uses_the_fast_ops(gcm_step):
    fgraph = gcm_step.maker.fgraph
    nodes = fgraph.toposort()
    float64 = [v for v in fgraph.variables
               if getattr(v.type, 'dtype', None) == 'float64']
    assert not float64, float64
    assert not [n for n in nodes if isinstance(n.op, ConvOp)]
    ops = [type(n.op).__name__ for n in nodes]
    # 13 convolutions + 2 transposed ones: forward, gradient of the weights
    # of all 15, gradient of the input of all but the first
    assert ops.count('FastCorrMM') == 13 + 2            # conv fwd, deconv bwd
    assert ops.count('FastCorrMM_gradWeights') == 15
    assert ops.count('FastCorrMM_gradInputs') == 2 + 12  # deconv fwd, conv bwd
    assert not [o for o in ops if 'AbstractConv' in o or
                o.startswith('CorrMM')]
    # layers 1-14: BN with its ReLU inside, forward and backward
    bn = [n.op for n in nodes if 'BatchNorm' in type(n.op).__name__]
    assert sorted((type(op).__name__, op.relu) for op in bn) == (
        [('BatchNormTrain', True)] * 14 + [('BatchNormTrainGrad', True)] * 14)


def test_training_graph_has_no_5d_class_contribution_map(gcm_step):
    """The score is computed from the CWM and the image's channel mean:
    nothing in the training step is (batch, N, D, R, C)."""
    five_d = [v for v in gcm_step.maker.fgraph.variables
              if getattr(v.type, 'ndim', 0) == 5]
    assert not five_d, five_d


def test_fast_score_equals_the_mean_of_the_ccm():
    x = T.tensor4('x')
    net = build_model('gcm', num_classes=4, input_shape=(3, 8, 8),
                      input_var=x)
    f = theano.function([x], lasagne.layers.get_output(
        [net['class_contribution_map'], net['class_scores']],
        deterministic=True))
    image = np.random.RandomState(0).uniform(0, 1, (5, 3, 8, 8))
    ccm, scores = f(image.astype(theano.config.floatX))
    np.testing.assert_allclose(scores, ccm.mean(axis=(2, 3, 4)), rtol=1e-5,
                               atol=1e-7)


def test_quick_benchmark_runs_and_reports_every_row(tmp_path):
    out = tmp_path / 'bench.json'
    child = subprocess.run(
        [sys.executable, BENCHMARK, '--quick', '--json', str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert child.returncode == 0, child.stderr[-3000:]
    table = child.stdout
    for row in ('training, images/s', 'inference, images/s',
                'x the direct path', 'effective GFLOP/s', 'filled cache',
                'peak memory', 'GCM/CNN time ratio, training',
                'GCM/CNN time ratio, inference', 'data pipeline',
                'float32 matmul'):
        assert row in table, row
    # each model beside its direct path (Winograd off), timed alternately
    assert ('| gcm | gcm, direct | gcm-clip | gcm-clip, direct | cnn | '
            'cnn, direct |') in table
    result = json.loads(out.read_text())
    assert set(result['models']) == {'gcm', 'gcm, direct', 'gcm-clip',
                                     'gcm-clip, direct', 'cnn', 'cnn, direct'}
    for model, entry in result['models'].items():
        keys = ['train_img_s_median', 'infer_img_s_median', 'train_gflops',
                'infer_gflops', 'maxrss_mb', 'forward_multiply_adds',
                'load_before']
        if ', ' not in model:  # compiled first: its compile times
            keys += ['compile_train_s', 'compile_infer_s', 'first_step_s',
                     'train_x_direct', 'infer_x_direct']
        for key in keys:
            assert entry[key] is not None, (model, key)
        assert entry['path'] == ('direct' if ', ' in model else 'winograd')
        assert len(entry['train_img_s']) == 2  # --quick: 2 repeats
        assert entry['train_img_s_median'] > 0
        assert entry['train_graph']['float64_variables'] == []
        assert entry['train_graph']['legacy_convop'] == 0
        assert entry['train_graph']['fastconv'] > 0
        assert entry['train_graph']['corrmm'] == 0
    assert result['ratio']['paper'] == 1.15
    assert result['ratio']['train'] > 0 and result['ratio']['infer'] > 0
    assert result['gemm']['numpy_gflops_median'] > 0
    assert result['gemm']['theano_gflops_median'] > 0
    assert 'img_s' in result['data'] or 'error' in result['data']
    assert result['load_start'] is not None


def test_multiply_add_count_of_table1():
    """The analytic count behind the GFLOP/s column, by hand for the first
    layers of GCM (32x32 input)."""
    sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))
    try:
        import throughput
    finally:
        sys.path.pop(0)
    total, per_layer = throughput.count_multiply_adds(build_model('gcm'))
    assert per_layer['conv1'] == 32 * 32 * 16 * 3 * 9
    assert per_layer['conv5'] == 16 * 16 * 32 * 16 * 9
    assert per_layer['deconv11'] == 8 * 8 * 64 * 32 * 9
    assert per_layer['conv15'] == 32 * 32 * 10 * 16 * 25
    assert per_layer['class_contribution_map'] == 10 * 3 * 32 * 32
    assert total == sum(per_layer.values())



def test_winograd_layer_benchmark_finds_every_winograd_layer():
    """benchmarks/winograd_layers.py measures the stride-1 3x3 and 5x5
    layers of the models (its timing runs by hand, not here)."""
    sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))
    try:
        import winograd_layers
    finally:
        sys.path.pop(0)
    shapes = dict(winograd_layers.layer_shapes(['gcm', 'cnn'], 32))
    assert shapes[(3, 16, 32, 3)] == ['gcm', 'cnn']  # layer 1 of both
    assert shapes[(16, 16, 32, 3)] == ['gcm']
    assert shapes[(18, 18, 32, 3)] == ['cnn']  # x1.16
    assert shapes[(64, 64, 8, 3)] == ['gcm']
    assert shapes[(16, 10, 32, 5)] == ['gcm']  # layer 15
    assert (16, 32, 32, 3) not in shapes  # layer 5, stride 2: not here
    row = ((16, 10, 32, 5), ['gcm'], 'forward',
           {'direct': 2.0, 'F2': 1.0, 'F4': 9.0}, 'F2')
    table = winograd_layers.markdown([row], winograd_layers.parse([]))
    assert '| 16, 10, 32x32, 5x5 | gcm | forward | 2.00 | 1.00 (2.00x) | - ' \
           '| F2 |' in table


def test_the_two_paths_compute_inference_as_described():
    """paths.py: 'winograd' is what evaluation runs now (no batch-norm op,
    the bias and ReLU inside the convolutions), 'direct' what it ran
    before (a batch-norm op after each convolution); same numbers."""
    from gcm_lasagne import convfuse, fastbn
    sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))
    try:
        import paths
    finally:
        sys.path.pop(0)
    x = T.tensor4('x')
    net = build_model('gcm', 4, (3, 8, 8), input_var=x)
    fns = {p: theano.function([x], paths.inference_output(net, p))
           for p in paths.PATHS}
    kinds = {p: [type(n.op) for n in fn.maker.fgraph.apply_nodes]
             for p, fn in fns.items()}
    assert fastbn.BatchNormInfer not in kinds['winograd']
    assert convfuse.FastCorrMMBias in kinds['winograd']
    assert fastbn.BatchNormInfer in kinds['direct']
    X = np.random.RandomState(0).uniform(0, 1, (2, 3, 8, 8)).astype('float32')
    np.testing.assert_allclose(fns['winograd'](X), fns['direct'](X),
                               rtol=1e-4, atol=1e-6)
    assert paths.path_of({'GCM_WINOGRAD': '0'}) == 'direct'
    assert paths.path_of({}) == 'winograd'
    assert paths.environment('direct') == {'GCM_WINOGRAD': '0'}
