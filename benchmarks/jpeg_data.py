#!/usr/bin/env python
"""How the JPEG CIFAR-10 was encoded: the libjpeg quality whose quantisation
tables each file carries, and its chroma subsampling. A fact about the data
the full-recipe runs trained on (README, "What was measured here"), not
about this package; run by hand:

    .venv/bin/python benchmarks/jpeg_data.py PATH --images 60000

Quality: the file's tables are compared with the ones libjpeg (through
Pillow) writes at each quality 1..100. Subsampling: 4:2:0 stores colour at
half the rows and columns (16x16 for a 32x32 image).
"""
import argparse
import collections
import io
import os
import random
import sys

from PIL import Image, JpegImagePlugin

SAMPLING = {0: '4:4:4', 1: '4:2:2', 2: '4:2:0'}


def tables(im):
    return tuple(tuple(t) for _, t in sorted(im.quantization.items()))


def quality_of_tables():
    """{quantisation tables: libjpeg quality} for qualities 1..100."""
    known = {}
    blank = Image.new('RGB', (32, 32))
    for q in range(1, 101):
        buf = io.BytesIO()
        blank.save(buf, 'JPEG', quality=q)
        known.setdefault(tables(Image.open(buf)), q)
    return known


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('folder', help='PATH: train/<class>/*, test/<class>/*')
    p.add_argument('--images', type=int, default=200)
    p.add_argument('--seed', type=int, default=0)
    args = p.parse_args()
    if args.images < 1:
        sys.exit('error: --images must be at least 1, not %d' % args.images)
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(args.folder)
                   for f in fs if f.lower().endswith(('.jpg', '.jpeg')))
    if not files:
        sys.exit('error: no .jpg files under %s' % args.folder)
    chosen = random.Random(args.seed).sample(
        files, min(args.images, len(files)))
    known = quality_of_tables()
    count = collections.Counter()
    for path in chosen:
        try:
            im = Image.open(path)
        except OSError:  # a truncated or foreign file is counted, not fatal
            count['unreadable'] += 1
            continue
        with im:
            if not isinstance(im, JpegImagePlugin.JpegImageFile):
                count['not a JPEG'] += 1
                continue
            q = known.get(tables(im))
            count['quality %s' % q if q else
                  'tables of no libjpeg quality'] += 1
            count['chroma %s' % SAMPLING.get(
                JpegImagePlugin.get_sampling(im), 'other')] += 1
            count['%dx%d pixels' % im.size] += 1
    print('%d of the %d JPEG files under %s%s' % (
        len(chosen), len(files), args.folder, '' if len(chosen) == len(files)
        else ', a seeded random choice (seed %d)' % args.seed))
    print()
    print('| property | images |')
    print('|---|---:|')
    for key in sorted(count):
        print('| %s | %d |' % (key, count[key]))


if __name__ == '__main__':
    main()
