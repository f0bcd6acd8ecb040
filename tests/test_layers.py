"""Issue 2: the compatibility layer and the backported layers, against
direct numpy computations."""
import os
import subprocess
import sys

import numpy as np
import pytest

import gcm_lasagne  # noqa: F401
import lasagne
import theano
import theano.tensor as T
from lasagne.layers import InputLayer, get_output, get_all_params

from gcm_lasagne import compat
from gcm_lasagne.compat import (BatchNormLayer, Conv2DLayer,
                                TransposedConv2DLayer, batch_norm)

floatX = theano.config.floatX
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def corr2d_same(x, w):
    """numpy 'same' convolution (flipped filters, as Lasagne's default)."""
    b, c, h, wd = x.shape
    f, _, k, _ = w.shape
    p = k // 2
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    wf = w[:, :, ::-1, ::-1]
    out = np.zeros((b, f, h, wd))
    for i in range(k):
        for j in range(k):
            out += np.einsum('bchw,fc->bfhw', xp[:, :, i:i + h, j:j + wd],
                             wf[:, :, i, j])
    return out


def test_batch_norm_training_and_deterministic_modes():
    rng = np.random.RandomState(0)
    x = T.tensor4('x')
    layer = BatchNormLayer(InputLayer((None, 3, 4, 5), x))
    layer.gamma.set_value(np.array([1., 2., .5], floatX))
    layer.beta.set_value(np.array([0., -1., 3.], floatX))
    train = theano.function([x], get_output(layer))
    test = theano.function([x], get_output(layer, deterministic=True))
    data = rng.normal(2, 3, (6, 3, 4, 5)).astype(floatX)
    gamma = layer.gamma.get_value()[None, :, None, None]
    beta = layer.beta.get_value()[None, :, None, None]

    mean = data.mean(axis=(0, 2, 3))
    inv_std = 1 / np.sqrt(data.var(axis=(0, 2, 3)) + 1e-4)  # biased var
    expected = ((data - mean[None, :, None, None])
                * inv_std[None, :, None, None] * gamma + beta)
    np.testing.assert_allclose(train(data), expected, rtol=1e-4, atol=1e-4)
    # training moved the running averages by alpha = 0.1 from (0, 1)
    np.testing.assert_allclose(layer.mean.get_value(), 0.1 * mean,
                               rtol=1e-5)
    np.testing.assert_allclose(layer.inv_std.get_value(),
                               0.9 + 0.1 * inv_std, rtol=1e-5)

    running_mean = layer.mean.get_value()[None, :, None, None]
    running_inv = layer.inv_std.get_value()[None, :, None, None]
    before = layer.mean.get_value().copy()
    np.testing.assert_allclose(
        test(data), (data - running_mean) * running_inv * gamma + beta,
        rtol=1e-4, atol=1e-4)
    assert np.array_equal(layer.mean.get_value(), before)  # not moved


def test_batch_norm_params_and_tags():
    layer = BatchNormLayer((None, 4, 2, 2))
    assert set(get_all_params(layer, trainable=True)) == {layer.beta,
                                                          layer.gamma}
    assert set(get_all_params(layer, regularizable=True)) == {layer.gamma}
    assert len(get_all_params(layer)) == 4  # mean and inv_std are saved
    assert set(get_all_params(layer, batch_norm_stat=True)) == {
        layer.mean, layer.inv_std}


def test_batch_norm_wrapper_moves_bias_and_nonlinearity():
    conv = Conv2DLayer((None, 3, 8, 8), 5, 3, pad='same', name='c')
    out = batch_norm(conv)
    assert conv.b is None and conv.nonlinearity is lasagne.nonlinearities.identity
    assert out.nonlinearity is lasagne.nonlinearities.rectify
    assert out.name == 'c_bn_nonlin' and out.input_layer.name == 'c_bn'
    assert len(get_all_params(out, trainable=True)) == 3  # W, beta, gamma


@pytest.mark.parametrize('stride', [1, 2])
def test_same_convolution_matches_numpy(stride):
    rng = np.random.RandomState(1)
    x = T.tensor4('x')
    conv = Conv2DLayer(InputLayer((None, 3, 8, 8), x), 4, 3, stride=stride,
                       pad='same', nonlinearity=None)
    conv.b.set_value(np.arange(4, dtype=floatX))
    data = rng.normal(size=(2, 3, 8, 8)).astype(floatX)
    out = theano.function([x], get_output(conv))(data)
    expected = (corr2d_same(data, conv.W.get_value())[:, :, ::stride, ::stride]
                + np.arange(4)[None, :, None, None])
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


def test_transposed_convolution_is_the_gradient_of_a_convolution():
    """8x8 -> 16x16 as layer 11: the transposed conv of x by W equals the
    adjoint of the stride-2 'same' conv by W: <conv(z), x> == <z, deconv(x)>,
    and each output pixel matches a direct numpy scatter."""
    rng = np.random.RandomState(2)
    x = T.tensor4('x')
    deconv = TransposedConv2DLayer(InputLayer((None, 4, 8, 8), x), 3, 3,
                                   stride=2, crop='same', output_size=16,
                                   nonlinearity=None, b=None)
    W = deconv.W.get_value()
    assert W.shape == (4, 3, 3, 3)
    data = rng.normal(size=(2, 4, 8, 8)).astype(floatX)
    out = theano.function([x], get_output(deconv))(data)
    assert out.shape == (2, 3, 16, 16)
    # direct scatter: every input pixel adds a flipped-filter copy at 2*i
    full = np.zeros((2, 3, 18, 18))
    wf = W[:, :, ::-1, ::-1]
    for i in range(8):
        for j in range(8):
            full[:, :, 2 * i:2 * i + 3, 2 * j:2 * j + 3] += np.einsum(
                'bc,cfkl->bfkl', data[:, :, i, j], wf)
    np.testing.assert_allclose(out, full[:, :, 1:17, 1:17], rtol=1e-4,
                               atol=1e-4)
    # adjoint of the stride-2 'same' convolution with the same W
    z = rng.normal(size=(2, 3, 16, 16))
    conv_z = corr2d_same(z, W)[:, :, ::2, ::2]
    np.testing.assert_allclose((conv_z * data).sum(), (z * out).sum(),
                               rtol=1e-4)


def test_transposed_convolution_output_sizes():
    assert TransposedConv2DLayer((None, 1, 8, 8), 2, 3, stride=2,
                                 crop=0).output_shape == (None, 2, 17, 17)
    assert TransposedConv2DLayer((None, 1, 8, 8), 2, 3, stride=2,
                                 crop='same').output_shape == (None, 2, 15, 15)
    assert TransposedConv2DLayer((None, 1, 8, 8), 2, 3, stride=2, crop='same',
                                 output_size=16).output_shape[2:] == (16, 16)


def test_lasagne_01_pooling_works_through_the_shim():
    x = T.tensor4('x')
    pool = lasagne.layers.MaxPool2DLayer(InputLayer((None, 1, 4, 4), x), 2)
    data = np.arange(16, dtype=floatX).reshape(1, 1, 4, 4)
    out = theano.function([x], get_output(pool))(data)
    assert out.ravel().tolist() == [5, 7, 13, 15]


def test_theano_needs_no_flags_and_user_flags_win(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ('THEANO_FLAGS',
                                                            'THEANORC')}
    env['HOME'] = str(tmp_path)  # no ~/.theanorc
    env['THEANO_FLAGS'] = 'base_compiledir=%s' % os.path.expanduser(
        '~/.theano')
    child = subprocess.run(
        [sys.executable, '-c', 'import gcm_lasagne, theano; c = theano.config;'
         ' print(c.floatX, c.openmp, repr(c.blas.ldflags))'],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    floatx, openmp, ldflags = child.stdout.split(None, 2)
    assert floatx == 'float32'
    assert ldflags.strip() == repr(compat.blas_ldflags())
    assert openmp == str(bool(compat.blas_ldflags()))

    env['THEANO_FLAGS'] += ',floatX=float64'
    rc = tmp_path / 'rc'
    rc.write_text('[global]\nopenmp = False\n')
    env['THEANORC'] = str(rc)
    child = subprocess.run(
        [sys.executable, '-c', 'import gcm_lasagne, theano; c = theano.config;'
         ' print(c.floatX, c.openmp)'],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert child.stdout.split() == ['float64', 'False']


def test_malloc_keeps_freed_memory_unless_the_user_configured_it():
    probe = 'import gcm_lasagne.compat as c; print(c.MALLOC_TUNED)'
    env = {k: v for k, v in os.environ.items()
           if k not in compat._MALLOC_ENV}

    def tuned(extra):
        return subprocess.run(
            [sys.executable, '-c', probe], cwd=ROOT, env=dict(env, **extra),
            capture_output=True, text=True, check=True).stdout.strip()
    assert tuned({}) == 'True'  # this machine has glibc
    assert tuned({'MALLOC_TRIM_THRESHOLD_': '0'}) == 'False'
    assert tuned({'GLIBC_TUNABLES': 'glibc.malloc.trim_threshold=0'}) == \
        'False'
    # tunables of anything but malloc leave it to us
    assert tuned({'GLIBC_TUNABLES': 'glibc.pthread.rseq=0'}) == 'True'
