"""The `compare` command: GCM's Class Contribution Map and another model's
Class Activation Map (CAM, or Grad-CAM) of the same images, side by side.

Each model explains its own decision: the map shown is of the class that
model predicts, and under it are that class and its score, so where the
two disagree the figure shows both answers and why each was given. Every
image is a group of three cells, the original, GCM's CCM, the other's
CAM, with positive parts above negative parts as in Figure 6. Each map has
its own brightness scale: the two are maps of different networks, whose scores
need not be on one scale, and a shared one would make the model with the larger
scores look more certain. Drawn with Pillow at exact pixel positions
(`CompareLayout`), like gcm_lasagne/visualize.py, whose helpers it uses.
"""
import math
import os

import numpy as np
from PIL import Image, ImageDraw

from . import train
from .errors import InputError
from .images import read_images
from .visualize import (BLACK, FONT_SIZE, GREY, PAD, RED, ROW_GAP, TEXT_H,
                        WHITE, _centred, _font, _fit, _image_rgb, _map_rgb,
                        _wrap, _zoom, choose_examples, explainable,
                        format_score, save_image, split_signed,
                        upscale_factor)

CELL_GAP = 6      # between the three cells of a group
GROUP_GAP = 24    # between groups, across and down
LEGEND_LINES = 3
COLUMNS = 5       # groups a row


class CompareLayout(object):
    """Pixel positions of a compare figure; arithmetic only. Image i is
    group i, `columns` groups a row; in a group, column 0 is the original,
    1 the GCM's map, 2 the other model's; row 0 the positive part, 1 the
    negative part; two lines of text under each cell."""

    def __init__(self, num_images, image_shape=(32, 32), columns=COLUMNS):
        self.columns = max(1, min(columns, num_images))
        self.rows = int(math.ceil(num_images / float(self.columns)))
        self.zoom = upscale_factor(*image_shape)
        self.cell_h = image_shape[0] * self.zoom
        self.cell_w = image_shape[1] * self.zoom
        self.group_w = 3 * self.cell_w + 2 * CELL_GAP
        self.group_h = (TEXT_H + 2 + 2 * self.cell_h + ROW_GAP + 2
                        + 2 * TEXT_H)
        self.grid_top = PAD + LEGEND_LINES * TEXT_H + 6
        self.width = (2 * PAD + self.columns * self.group_w
                      + (self.columns - 1) * GROUP_GAP)
        self.height = (self.grid_top + self.rows * self.group_h
                       + (self.rows - 1) * GROUP_GAP + PAD)

    @property
    def size(self):
        return self.width, self.height

    def group_origin(self, image):
        """(x, y) of an image's group: the top left of its header line."""
        row, column = divmod(image, self.columns)
        return (PAD + column * (self.group_w + GROUP_GAP),
                self.grid_top + row * (self.group_h + GROUP_GAP))

    def cell_box(self, image, row, column):
        """(x0, y0, x1, y1), x1/y1 exclusive."""
        x, y = self.group_origin(image)
        x += column * (self.cell_w + CELL_GAP)
        y += TEXT_H + 2 + row * (self.cell_h + ROW_GAP)
        return x, y, x + self.cell_w, y + self.cell_h

    def text_top(self, image, line):
        """y of text line 0 or 1 under the group's cells."""
        return self.cell_box(image, 1, 0)[3] + 2 + line * TEXT_H


def compare_figure(images, first, second, classes, path, captions=None,
                   true_labels=None, columns=COLUMNS):
    """The figure. images (N, 3, H, W) uint8; first and second, one per
    model, dicts of: name (e.g. 'GCM'), method ('ccm', 'cam' or
    'grad-cam'), maps (N, 3, H, W) for a CCM or (N, H, W) for a CAM, the
    predicted class's, predicted (N,) class indices and scores (N,) the
    predicted class's score. captions: text under each original;
    true_labels (N,) if known: a wrong prediction is written in red.
    Writes a PNG to path (unless None); returns a dict of image (PIL),
    path, size, layout, scales (N, 2), texts (N lists of 2 (class, score)
    text pairs as drawn) and wrong (N, 2) booleans."""
    images = np.asarray(images)
    N = len(images)
    layout = CompareLayout(N, images.shape[2:], columns)
    canvas = Image.new('RGB', layout.size, WHITE)
    draw = ImageDraw.Draw(canvas)
    font = _font(FONT_SIZE)
    short = {'ccm': 'CCM', 'cam': 'CAM', 'grad-cam': 'Grad-CAM'}
    heads = ['%s %s' % (m['name'], short[m['method']])
             for m in (first, second)]
    legend = ('Each image, then %s of the class %s predicts and %s of the '
              'class %s predicts; under each map that class and its score. '
              'Positive part above, negative part below, each map on its '
              'own brightness scale; a red class name: a wrong prediction.'
              % (heads[0], first['name'], heads[1], second['name']))
    lines = _wrap(draw, legend, font, layout.width - 2 * PAD)
    if len(lines) > LEGEND_LINES:
        lines = lines[:LEGEND_LINES]
        lines[-1] = _fit(draw, lines[-1] + ' ...', font,
                         layout.width - 2 * PAD)
    for k, line in enumerate(lines):
        draw.text((PAD, PAD + k * TEXT_H), line, font=font, fill=GREY)

    scales, texts, wrong = np.zeros((N, 2)), [], np.zeros((N, 2), bool)
    for i in range(N):
        x, y = layout.group_origin(i)
        for c, head in enumerate(heads):
            _centred(draw, layout.cell_box(i, 0, c + 1)[0], layout.cell_w,
                     y, head, font, GREY)
        box = layout.cell_box(i, 0, 0)
        canvas.paste(Image.fromarray(_zoom(_image_rgb(images[i]),
                                           layout.zoom)), box[:2])
        if captions is not None:
            _centred(draw, box[0], layout.cell_w, layout.text_top(i, 0),
                     captions[i], font, GREY)
        pair = []
        for c, m in enumerate((first, second)):
            positive, negative = split_signed(m['maps'][i])
            scales[i, c] = scale = float(max(positive.max(), negative.max()))
            for row, part in enumerate((positive, negative)):
                x0, y0, _, _ = layout.cell_box(i, row, c + 1)
                canvas.paste(Image.fromarray(_zoom(_map_rgb(part, scale),
                                                   layout.zoom)), (x0, y0))
            label = int(m['predicted'][i])
            wrong[i, c] = (true_labels is not None
                           and label != int(true_labels[i]))
            text = (classes[label], format_score(m['scores'][i]))
            pair.append(text)
            x0 = layout.cell_box(i, 0, c + 1)[0]
            for line, t in enumerate(text):
                _centred(draw, x0, layout.cell_w, layout.text_top(i, line),
                         t, font, RED if wrong[i, c] and not line else BLACK)
        texts.append(pair)
    if path is not None:
        save_image(canvas, path)
    return {'image': canvas, 'path': path, 'size': canvas.size,
            'layout': layout, 'scales': scales, 'texts': texts,
            'wrong': wrong}


def _models(gcm, other, method):
    """The two Models, checked before any work."""
    gcm, own = explainable(gcm)
    if own != 'ccm':
        raise InputError('compare takes a GCM model first (its CCMs are '
                         'shown), not a %s model' % gcm.kind)
    other, own = explainable(other)
    if own == 'ccm':
        raise InputError('compare takes a model with CAM second (the CNN '
                         'baseline or resnet20), not a %s model' % other.kind)
    method = other.figure_method(method)
    if (gcm.classes != other.classes
            or gcm.input_shape != other.input_shape):
        raise InputError('the two models do not share classes and input '
                         'shape (%s %s, %s %s)' % (
                             gcm.kind, gcm.input_shape, other.kind,
                             other.input_shape))
    return gcm, other, method


def _captions(paths):
    """Names under the originals: the files' stems, with their folders'
    names when stems repeat (samples/cifar10-test/cat/0000.jpg: cat/0000),
    numbered only when those repeat too."""
    stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    named = ['%s/%s' % (os.path.basename(os.path.dirname(
        os.path.abspath(p))), s) for p, s in zip(paths, stems)]
    return ['%s (%d)' % (n, i + 1) if named.count(n) > 1 else n
            for i, n in enumerate(named)]


NAMES = {'gcm': 'GCM', 'gcm-clip': 'GCM-clip', 'gcm-basic': 'GCM',
         'cnn': 'CNN', 'resnet20': 'ResNet-20'}


def model_name(model):
    return NAMES.get(model.kind, model.kind)


def run_compare(gcm, other, out_dir, image_paths=None,
                data_config_override=None, count=None, method=None,
                seed=0, echo=print):
    """The `compare` command: GCM's CCM beside the other model's CAM (or
    Grad-CAM) of image files, or when none are given of test images of
    the GCM's data (or the data the override names), `count` of them
    (default one a class, at most 10; a seeded choice, correctly and
    wrongly classified alike). Writes OUT/compare.png, prints a line per
    image and returns the text."""
    gcm, other, method = _models(gcm, other, method)
    classes = gcm.classes
    if image_paths:
        X, notes = read_images(image_paths, gcm.input_shape,
                               return_notes=True)
        labels, captions = None, _captions(image_paths)
        names = ['%s%s' % (p, ' (%s)' % n if n else '')
                 for p, n in zip(image_paths, notes)]
    else:
        images, all_labels = train.load_test_data(gcm.meta,
                                                  data_config_override)
        count = count or min(len(classes), 10)
        per_class = int(math.ceil(count / float(len(classes))))
        # every image is "correct" for choose_examples: a class-balanced,
        # seeded choice that keeps the models' mistakes in
        chosen = choose_examples(all_labels, all_labels, classes, per_class,
                                 seed)[:count]
        X, labels = images[chosen], np.asarray(all_labels)[chosen]
        captions = ['true: %s' % classes[c] for c in labels]
        names = ['test image %d (%s)' % (i, classes[c])
                 for i, c in zip(chosen, labels)]
    sides = []
    for model, m in ((gcm, 'ccm'), (other, method)):
        p = model.predict(X)
        if m == 'ccm':
            maps = model.class_contribution_maps(X)[np.arange(len(X)),
                                                    p.label]
        else:
            maps = model.attribution_maps(X, m, p.label)
        sides.append({'name': model_name(model), 'method': m, 'maps': maps,
                      'predicted': p.label,
                      'scores': p.class_scores[np.arange(len(X)), p.label],
                      'prob': p.prob[np.arange(len(X)), p.label]})
    if sides[0]['name'] == sides[1]['name']:
        sides[1]['name'] += ' 2'
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, 'compare.png')
    compare_figure(X, sides[0], sides[1], classes, path, captions, labels)
    lines = []
    for i, name in enumerate(names):
        lines.append('%s: %s' % (name, ' | '.join(
            '%s %s (score %s, prob %.1f%%)' % (
                s['name'], classes[s['predicted'][i]],
                format_score(s['scores'][i]), 100 * s['prob'][i])
            for s in sides)))
    lines.append('wrote %s' % path)
    text = '\n'.join(lines)
    if echo:
        echo(text)
    return text
