"""Checks of the Python API's arguments (api.py, attribution.py, read_images).
Each names the argument and says what it must be, in one sentence: an
InputError (a ValueError) for a bad value, an InputTypeError (a TypeError
too) for a bad type. Without them numpy and Theano answer from inside
('inhomogeneous shape', 'range() arg 3 must not be zero'), or worse, go on:
a float class index was truncated to an int, a batch size of 0 taken as
the default."""
import numbers
import os

import numpy as np

from .errors import InputError, InputTypeError

FILE_NAME = (str, bytes, os.PathLike)


def _type(value):
    return 'None' if value is None else type(value).__name__


def positive_int(name, value):
    """value as an int >= 1. A bool is refused: True is not a size."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputTypeError('%s must be a positive int, not %s %r'
                             % (name, _type(value), value))
    if value < 1:
        raise InputError('%s must be a positive int, not %d' % (name, value))
    return int(value)


def seed(name, value):
    """value as an int numpy can seed with (0..2**32-1)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputTypeError('%s must be an int in 0..2**32-1, not %s %r'
                             % (name, _type(value), value))
    if not 0 <= value < 2 ** 32:
        raise InputError('%s must be an int in 0..2**32-1, not %d'
                         % (name, value))
    return int(value)


def class_indices(name, values, count, classes):
    """values as an int32 array of `count` class indices in 0..classes-1,
    one per image. Floats and bools are refused, not rounded: 1.7 is not a
    class, and int32 would have cut it to 1."""
    what = ('%s must be %d integers, one class index in 0..%d per image'
            % (name, count, classes - 1))
    try:
        array = np.asarray(values)
    except ValueError:  # a ragged list
        raise InputError('%s, not a ragged list' % what) from None
    if array.dtype.kind not in 'iu':
        raise InputTypeError('%s, not %s %s' % (what, array.dtype,
                                                array.shape))
    if array.shape != (count,):
        raise InputError('%s, not shape %s' % (what, array.shape))
    bad = np.flatnonzero((array < 0) | (array >= classes))
    if len(bad):
        raise InputError('%s must be class indices 0..%d, not %d (%s[%d])'
                         % (name, classes - 1, array[bad[0]], name, bad[0]))
    return array.astype(np.int32)


def shape_hint(shape, input_shape):
    """A likely mistake behind an image of the wrong shape, or ''."""
    if tuple(shape) == tuple(input_shape[1:]) + tuple(input_shape[:1]):
        return ' (channels last? transpose to channels first)'
    if len(shape) == 2 and tuple(shape) == tuple(input_shape[1:]):
        return ' (no channel axis)'
    return ''


def image_array(images, input_shape):
    """images as one numpy array, not yet checked against input_shape. A
    list (or tuple) is checked image by image first, so that mixed sizes
    or dtypes name the image that differs; file names are sent to
    read_images."""
    read = 'read image files with gcm_lasagne.read_images(paths, ' \
           'model.input_shape)'
    if isinstance(images, FILE_NAME):
        raise InputTypeError('images must be pixels, not the file name %r; '
                             '%s' % (images, read))
    if isinstance(images, (list, tuple)):
        if not len(images):
            raise InputError('images is an empty %s; give at least one '
                             'image' % type(images).__name__)
        arrays = []
        for i, image in enumerate(images):
            if isinstance(image, FILE_NAME):
                raise InputTypeError('images[%d] is the file name %r, not '
                                     'pixels; %s' % (i, image, read))
            try:
                array = np.asarray(image)
            except ValueError:
                raise InputError('images[%d] is a ragged list, not an image'
                                 % i) from None
            if array.shape != tuple(input_shape):
                raise InputError(
                    'images[%d] has shape %s but this model takes images of '
                    'shape %s (channels, rows, cols)%s; read_images resizes '
                    'image files' % (i, array.shape, tuple(input_shape),
                                     shape_hint(array.shape, input_shape)))
            if arrays and array.dtype != arrays[0].dtype:
                raise InputError('images mixes %s (images[0]) and %s '
                                 '(images[%d]); give every image as uint8 '
                                 '(0-255) or every one as float (in [0, 1])'
                                 % (arrays[0].dtype, array.dtype, i))
            arrays.append(array)
        return np.stack(arrays)
    try:
        array = np.asarray(images)
    except ValueError:
        raise InputError('images is ragged: give an array (N, %s) or a '
                         'list of (%s) images' % ((', '.join(
                             map(str, input_shape)),) * 2)) from None
    if array.dtype.kind not in 'biuf':  # None, objects, strings
        raise InputTypeError('images must be a numpy array of pixels (N, %s), '
                             'not %s' % (', '.join(map(str, input_shape)),
                                         _type(images) if array.ndim == 0
                                         else '%s of %s' % (_type(images),
                                                            array.dtype)))
    return array
