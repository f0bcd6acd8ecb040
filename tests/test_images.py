"""gcm_lasagne.images: image folders and image files, on small synthetic
PNGs and JPEGs."""
import shutil

import numpy as np
import pytest
from PIL import Image

from gcm_lasagne import images
from gcm_lasagne.errors import DataError


def _pattern(h, w, seed):
    return np.random.RandomState(seed).randint(0, 256, (h, w, 3)).astype(
        np.uint8)


@pytest.fixture
def folder(tmp_path):
    """train/{cat,dog} with 3 and 2 PNGs, test/{cat,dog} with 1 each, 6x5;
    plus files the loader must ignore. Returns (root, {path: pixels})."""
    root = tmp_path / 'imgs'
    pixels = {}
    counts = {('train', 'dog'): 2, ('train', 'cat'): 3,
              ('test', 'cat'): 1, ('test', 'dog'): 1}
    for i, ((split, cls), n) in enumerate(sorted(counts.items())):
        (root / split / cls).mkdir(parents=True)
        for j in range(n):
            path = root / split / cls / ('%02d.png' % (n - j))
            pixels[str(path)] = _pattern(6, 5, 10 * i + j)
            Image.fromarray(pixels[str(path)]).save(str(path))
        (root / split / cls / 'notes.txt').write_text('not an image')
        (root / split / cls / '.hidden.png').write_bytes(b'junk')
    (root / 'train' / 'README').write_text('a file, not a class')
    return root, pixels


def test_image_folder_arrays(folder):
    root, pixels = folder
    d = images.load_image_folder(str(root))
    assert d['classes'] == ['cat', 'dog']
    assert d['X_train'].shape == (5, 3, 6, 5)
    assert d['X_train'].dtype == np.uint8 and d['y_train'].dtype == np.int32
    np.testing.assert_array_equal(d['y_train'], [0, 0, 0, 1, 1])
    np.testing.assert_array_equal(d['y_test'], [0, 1])
    order = [root / 'train' / 'cat' / n for n in ('01.png', '02.png',
                                                  '03.png')]
    order += [root / 'train' / 'dog' / n for n in ('01.png', '02.png')]
    for i, path in enumerate(order):
        np.testing.assert_array_equal(d['X_train'][i],
                                      pixels[str(path)].transpose(2, 0, 1))


def test_test_split_alone_skips_training_images(folder):
    root, pixels = folder
    # a training file that cannot be decoded proves it is never opened
    (root / 'train' / 'cat' / '01.png').write_bytes(b'not a png')
    d = images.load_image_folder(str(root), splits=('test',))
    assert sorted(d) == ['X_test', 'classes', 'y_test']
    np.testing.assert_array_equal(d['y_test'], [0, 1])
    np.testing.assert_array_equal(
        d['X_test'][1], pixels[str(root / 'test' / 'dog' / '01.png')]
        .transpose(2, 0, 1))
    with pytest.raises(DataError):
        images.load_image_folder(str(root))
    shutil.rmtree(str(root / 'test' / 'dog'))
    with pytest.raises(DataError, match='different class folders'):
        images.load_image_folder(str(root), splits=('test',))


def test_grayscale_and_rgba_become_rgb(folder):
    root, _ = folder
    gray = np.arange(30, dtype=np.uint8).reshape(6, 5) * 8
    Image.fromarray(gray, 'L').save(str(root / 'train' / 'cat' / '01.png'))
    rgba = np.dstack([_pattern(6, 5, 99), np.full((6, 5), 17, np.uint8)])
    Image.fromarray(rgba, 'RGBA').save(str(root / 'test' / 'dog' / '01.png'))
    d = images.load_image_folder(str(root))
    for ch in range(3):
        np.testing.assert_array_equal(d['X_train'][0, ch], gray)
    np.testing.assert_array_equal(d['X_test'][1],
                                  rgba[:, :, :3].transpose(2, 0, 1))


def test_jpeg_files_load(folder):
    root, _ = folder
    img = np.full((6, 5, 3), (200, 40, 90), np.uint8)
    Image.fromarray(img).save(str(root / 'train' / 'dog' / '00.JPEG'))
    d = images.load_image_folder(str(root))
    assert len(d['y_train']) == 6
    assert np.abs(d['X_train'][3].astype(int)
                  - img.transpose(2, 0, 1)).max() < 8


@pytest.mark.parametrize('content', [b'not an image', 'truncated'])
def test_unreadable_image_is_named(folder, content):
    root, _ = folder
    bad = root / 'test' / 'dog' / '01.png'
    if content == 'truncated':
        content = bad.read_bytes()[:60]
    bad.write_bytes(content)
    with pytest.raises(DataError) as e:
        images.load_image_folder(str(root))
    assert str(bad) in str(e.value) and 'cannot read image' in str(e.value)


def test_image_of_another_size_is_named_unless_resized(folder):
    root, _ = folder
    odd = root / 'test' / 'cat' / '01.png'
    Image.fromarray(_pattern(8, 7, 5)).save(str(odd))
    with pytest.raises(DataError) as e:
        images.load_image_folder(str(root))
    message = str(e.value)
    assert str(odd) in message and '8x7' in message and '6x5' in message
    d = images.load_image_folder(str(root), size=(4, 3))
    assert d['X_train'].shape == (5, 3, 4, 3)
    assert d['X_test'].shape == (2, 3, 4, 3)
    flat = root / 'train' / 'cat' / '02.png'
    Image.fromarray(np.full((6, 5, 3), 123, np.uint8)).save(str(flat))
    d = images.load_image_folder(str(root), size=(6, 5))
    assert (d['X_train'][1] == 123).all() and d['X_test'].shape[2:] == (6, 5)


def test_class_sets_must_match(folder):
    root, _ = folder
    (root / 'test' / 'dog').rename(root / 'test' / 'wolf')
    with pytest.raises(DataError,
                       match=r"only in train: \['dog'\]; only in test: "
                             r"\['wolf'\]"):
        images.load_image_folder(str(root))


def test_empty_class_and_missing_split(folder, tmp_path):
    root, _ = folder
    (root / 'test' / 'emu').mkdir()
    (root / 'train' / 'emu').mkdir()
    with pytest.raises(DataError, match='no .png/.jpg/.jpeg images in'):
        images.load_image_folder(str(root))
    (tmp_path / 'only_train' / 'train' / 'a').mkdir(parents=True)
    with pytest.raises(DataError, match='no folder .*test'):
        images.load_image_folder(str(tmp_path / 'only_train'))
    with pytest.raises(DataError, match='is not a folder'):
        images.load_image_folder(str(tmp_path / 'nothing'))


# ------------------------------------------------------------ image files

def _png(path, mode, size, seed=0):
    rng = np.random.RandomState(seed)
    channels = {'L': None, 'RGB': 3, 'RGBA': 4}[mode]
    shape = (size[1], size[0]) + ((channels,) if channels else ())
    Image.fromarray(rng.randint(0, 256, shape).astype(np.uint8),
                    mode).save(path)
    return str(path)


def test_read_images_converts_and_resizes_with_notes(tmp_path):
    shape = (3, 8, 8)
    paths = [_png(tmp_path / 'same.png', 'RGB', (8, 8)),
             _png(tmp_path / 'gray.png', 'L', (8, 8)),
             _png(tmp_path / 'alpha.png', 'RGBA', (8, 8)),
             _png(tmp_path / 'big.png', 'RGB', (20, 12))]
    Image.open(paths[0]).convert('P').save(tmp_path / 'pal.png')
    paths.append(str(tmp_path / 'pal.png'))
    X, notes = images.read_images(paths, shape, return_notes=True)
    assert X.shape == (5,) + shape and X.dtype == np.uint8
    assert notes[0] == ''
    assert 'mode L' in notes[1] and 'mode RGBA' in notes[2]
    assert 'mode P' in notes[4]
    assert notes[3] == 'resized from 12x20 to 8x8 (rows x cols)'
    gray = np.asarray(Image.open(paths[1]))
    assert all(np.array_equal(X[1, c], gray) for c in range(3))
    np.testing.assert_array_equal(
        X[0], np.asarray(Image.open(paths[0])).transpose(2, 0, 1))
    # without notes: the array alone; one path is a batch of one
    np.testing.assert_array_equal(images.read_images(paths, shape), X)
    np.testing.assert_array_equal(images.read_images(paths[3], (8, 8)),
                                  X[3:4])


def test_a_file_that_is_not_an_image_is_a_one_line_error(tmp_path):
    bad = tmp_path / 'notes.png'
    bad.write_text('not a picture\n')
    with pytest.raises(DataError) as e:
        images.read_images([str(bad)], (3, 8, 8))
    assert str(bad) in str(e.value) and '\n' not in str(e.value)
    with pytest.raises(DataError, match='no image file at'):
        images.read_images([str(tmp_path / 'missing.jpg')], (3, 8, 8))
