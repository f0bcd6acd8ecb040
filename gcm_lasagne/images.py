"""Image files and image folders as uint8 (N, 3, H, W) RGB arrays.

Only numpy, Pillow and the standard library (no Theano). Images stay uint8
until a batch goes to the network (`batches.to_float`), so 50,000 CIFAR
images take 150 MB rather than 600 MB. A missing or unreadable file or a
bad folder layout raises `DataError` with a one-line message.
"""
import os

import numpy as np
from PIL import Image

from .errors import DataError, InputError, InputTypeError

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg')


def _visible(names):
    return sorted(n for n in names if not n.startswith('.'))


def _class_folders(split_dir):
    if not os.path.isdir(split_dir):
        raise DataError('no folder %s (an image folder holds train/<class>/ '
                        'and test/<class>/)' % split_dir)
    return [c for c in _visible(os.listdir(split_dir))
            if os.path.isdir(os.path.join(split_dir, c))]


def _image_files(split_dir, classes):
    files, labels = [], []
    for label, name in enumerate(classes):
        folder = os.path.join(split_dir, name)
        found = [os.path.join(folder, f) for f in _visible(os.listdir(folder))
                 if f.lower().endswith(IMAGE_EXTENSIONS)]
        if not found:
            raise DataError('no .png/.jpg/.jpeg images in %s' % folder)
        files += found
        labels += [label] * len(found)
    return files, np.array(labels, dtype=np.int32)


def rgb_image(im):
    """A Pillow image as 8-bit RGB, the same way for training data and for
    images to explain: grayscale and palette become RGB, alpha is dropped,
    16-bit grayscale is scaled (Pillow's own conversion would clip it)."""
    if im.mode == 'RGB':
        return im
    if im.mode.startswith('I;16') or im.mode == 'I':
        im = Image.fromarray((np.asarray(im, np.float64) / 257).round()
                             .astype(np.uint8))
    elif im.mode == 'P':
        im = im.convert('RGBA')  # honours palette transparency
    return im.convert('RGB')


def _read_image(path, size=None):
    """(H, W, 3) uint8 RGB of an image file, resized to size=(H, W) if it
    has another size, and a list of what was done to it."""
    try:
        with Image.open(path) as im:
            done = []
            if im.mode != 'RGB':
                done.append('converted from mode %s to RGB' % im.mode)
                im = rgb_image(im)
            if size is not None and im.size != (size[1], size[0]):
                done.append('resized from %dx%d to %dx%d (rows x cols)'
                            % (im.size[1], im.size[0], size[0], size[1]))
                im = im.resize((size[1], size[0]), Image.BILINEAR)
            return np.asarray(im), done  # decodes here, inside the try
    except (OSError, ValueError, SyntaxError,
            Image.DecompressionBombError) as e:
        raise DataError('cannot read image %s: not a readable image (%s)'
                        % (path, e))


def read_images(paths, input_shape, return_notes=False):
    """Image files as a model sees them (what `explain` does to a file).

    paths: a list of image files (PNG, JPEG, anything Pillow reads), or one
    path. input_shape: the model's (3, rows, cols) (or (rows, cols)).
    Returns uint8 (N, 3, rows, cols) RGB, pixels 0-255, ready for
    `Model.predict` and the maps. Grayscale, palette and RGBA images become
    RGB (alpha dropped) and other sizes are resized with the bilinear
    filter, both as `load_image_folder` does for training data. With
    return_notes, returns (images, notes): one note per image saying what
    was done to it ('' if it was used as it is). A missing or unreadable
    file raises DataError naming it; paths that are not file names, no
    paths, or an input_shape that is not (3, rows, cols) or (rows, cols)
    an InputError (a ValueError; a TypeError too for a wrong type).
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not isinstance(paths, (list, tuple)):
        raise InputTypeError('paths must be a file name or a list of them, '
                             'not %s' % type(paths).__name__)
    if not paths:
        raise InputError('paths is empty; give at least one image file')
    for i, path in enumerate(paths):
        if not isinstance(path, (str, os.PathLike)):
            raise InputTypeError('paths[%d] must be a file name (str or '
                                 'os.PathLike), not %s'
                                 % (i, type(path).__name__))
    rows, cols = _size(input_shape)
    X = np.empty((len(paths), 3, rows, cols), np.uint8)
    notes = []
    for i, path in enumerate(paths):
        if not os.path.isfile(path):
            raise DataError('no image file at %s' % path)
        image, done = _read_image(path, (rows, cols))
        X[i] = image.transpose(2, 0, 1)
        notes.append('; '.join(done))
    return (X, notes) if return_notes else X


def _size(input_shape):
    """(rows, cols) of a model's input_shape (3, rows, cols) or of (rows,
    cols); images are read as RGB, so a shape of other channels is
    refused (the model could not take them)."""
    try:
        shape = tuple(int(n) for n in input_shape)
        ok = (len(shape) in (2, 3) and min(shape) >= 1
              and (len(shape) == 2 or shape[0] == 3)
              and shape == tuple(input_shape))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InputError('input_shape must be (3, rows, cols) or (rows, '
                         'cols), positive ints (a model\'s input_shape), '
                         'not %r' % (input_shape,))
    return shape[-2:]


def _read_images(files, size, reference):
    """Stack images into (N, 3, H, W). Without `size`, the first image of
    the training set fixes the size (`reference` = [path, (H, W)])."""
    X = None
    for i, path in enumerate(files):
        img, _ = _read_image(path, size)
        if reference[0] is None:
            reference[:] = [path, img.shape[:2]]
        if img.shape[:2] != reference[1]:
            raise DataError('%s is %dx%d (height x width) but %s is %dx%d; '
                            'images must share one size, or give an image '
                            'size to resize them all'
                            % ((path,) + img.shape[:2] + (reference[0],)
                               + tuple(reference[1])))
        if X is None:
            X = np.empty((len(files),) + img.shape, np.uint8)
        X[i] = img
    return np.ascontiguousarray(X.transpose(0, 3, 1, 2))


def load_image_folder(root, size=None, splits=('train', 'test')):
    """Images in ROOT/train/<class>/ and ROOT/test/<class>/ (.png, .jpg,
    .jpeg; other files and names starting with '.' are ignored).
    `splits=('test',)` reads only the test images (the class folders of
    both are still checked): evaluating a model needs no training images,
    and decoding CIFAR-10's 50,000 JPEGs takes half a minute.

    Returns the same dict as `load_cifar10`: X uint8 (N, 3, H, W) RGB, y
    int32 indices into `classes`, the sorted class-folder names; files in
    sorted order, so loading is deterministic. Grayscale, palette and RGBA
    images become RGB (alpha dropped). All images must share one size
    unless size=(H, W) is given: then every image of another size is
    resized with Pillow's bilinear filter, which averages over the source
    area when shrinking (so it does not alias). Keys of a split not read
    are absent.
    """
    root = os.path.expanduser(root)
    if not os.path.isdir(root):
        raise DataError('%s is not a folder (an image folder holds '
                        'train/<class>/ and test/<class>/)' % root)
    train_dir, test_dir = os.path.join(root, 'train'), os.path.join(root,
                                                                    'test')
    classes = _class_folders(train_dir)
    if not classes:
        raise DataError('no class folders in %s' % train_dir)
    test_classes = _class_folders(test_dir)
    if test_classes != classes:
        raise DataError('train/ and test/ of %s have different class folders '
                        '(only in train: %s; only in test: %s)'
                        % (root, sorted(set(classes) - set(test_classes)),
                           sorted(set(test_classes) - set(classes))))
    if size is not None:
        size = tuple(int(s) for s in size)
        if len(size) != 2 or min(size) < 1:
            raise DataError('image size must be two positive numbers '
                            '(height, width), not %s' % (size,))
    reference = [None, size]
    out = {'classes': classes}
    for split, folder in (('train', train_dir), ('test', test_dir)):
        if split not in splits:
            continue
        files, y = _image_files(folder, classes)
        out['X_' + split] = _read_images(files, size, reference)
        out['y_' + split] = y
    return out
