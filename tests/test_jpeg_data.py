"""benchmarks/jpeg_data.py, the script behind the README's statement about
the JPEG CIFAR-10's encoding, tells qualities and chroma subsampling apart
on JPEGs written here with known settings."""
import os
import subprocess
import sys

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'benchmarks', 'jpeg_data.py')


def run(*args):
    return subprocess.run([sys.executable, SCRIPT] + list(args),
                          capture_output=True, text=True)


def test_counts_quality_and_subsampling(tmp_path):
    rng = np.random.RandomState(0)
    settings = [('a', 75, 2), ('a', 75, 2), ('b', 75, 0), ('b', 90, 2)]
    for i, (cls, quality, sampling) in enumerate(settings):
        folder = tmp_path / 'train' / cls
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.randint(0, 256, (32, 32, 3)).astype(np.uint8)
        Image.fromarray(pixels).save(folder / ('%d.jpg' % i), quality=quality,
                                     subsampling=sampling)
    (tmp_path / 'train' / 'a' / 'skip.png').write_bytes(b'not examined')
    (tmp_path / 'train' / 'b' / 'broken.jpg').write_bytes(b'not a jpeg')
    out = run(str(tmp_path), '--images', '10')
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith('5 of the 5 JPEG files')
    rows = [[cell.strip() for cell in line.strip('|').split('|')]
            for line in out.stdout.splitlines()[4:]]
    assert dict(rows) == {'quality 75': '3', 'quality 90': '1',
                          'chroma 4:2:0': '3', 'chroma 4:4:4': '1',
                          '32x32 pixels': '4', 'unreadable': '1'}


def test_folder_without_jpegs_is_one_line_error(tmp_path):
    out = run(str(tmp_path))
    assert out.returncode != 0
    assert out.stderr.strip().count('\n') == 0
    assert 'no .jpg files' in out.stderr


def test_images_below_one_is_one_line_error(tmp_path):
    for n in ('0', '-3'):
        out = run(str(tmp_path), '--images', n)
        assert out.returncode != 0
        assert out.stderr.strip().count('\n') == 0
        assert '--images must be at least 1' in out.stderr
