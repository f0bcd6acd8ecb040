"""Figures 6-8 of the paper and `explain` for one's own images.

Everything is drawn with Pillow, not matplotlib: Pillow gives exact pixel
positions and a size that does not depend on a DPI or a backend, so the
tests can find a cell, its red frame and its score by arithmetic
(`figure6_layout`) and check them in the written PNG.

How a CCM is shown (Sec. 4.2): the CCM is image-like (3 channels, since
CCM_j = Tile(CWM_j) (x) I), so it is drawn in colour. It is signed, so it
is split into its positive part max(CCM, 0) and its negative part
max(-CCM, 0) (`split_signed`; positive - negative == CCM exactly). Each part
is divided by one scale shared by all cells of an image (the largest value
of either part over all classes), clipped to [0, 1] and drawn as RGB: black
means "no contribution", and because the class score is the CCM's mean,
the brightest-on-top / darkest-below column is the winning class.

A model without CCMs (the CNN baseline, resnet20) is drawn in the same
layout from its Class Activation Maps (`Model.class_activation_maps`), one
cell per class, positive part above, negative part below, one scale per
image. A CAM has one channel, so its cells are grey; multiplying it by
the image, as the CCM is made, would draw a map whose mean is no longer
(up to the class's bias) the class score. Grad-CAM is never negative:
positive parts only, as Figure 7. The legend names the method.
"""
import math
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from . import api, atomic, train
from .errors import InputError
from .images import read_images


class ExplainError(ValueError):
    """A one-line reason why figures cannot be made (no correctly
    classified example to show)."""


# ------------------------------------------------------------ the maps

def split_signed(ccm):
    """(positive part, negative part) = (max(ccm, 0), max(-ccm, 0)); their
    difference is ccm exactly (one of the two is 0 at every element)."""
    ccm = np.asarray(ccm)
    return np.maximum(ccm, 0), np.maximum(-ccm, 0)


def format_score(score):
    """The text printed under a cell for a class score: 3 decimals, or an
    exponent for tiny scores (an untrained model's would all read 0.000)."""
    if score == 0 or abs(score) >= 0.01:
        return '%+.3f' % score
    return '%+.2e' % score


# ------------------------------------------------------------ drawing

FONT_SIZE = 12
PAD = 10          # outer margin
GAP = 12          # between columns; a red frame sits inside it
ROW_GAP = 8       # between the positive and the negative row of an image
BLOCK_GAP = 14    # between images
FRAME = 3         # red frame width, drawn outside the cell
TEXT_H = 16       # one line of text
TARGET_CELL = 96  # cells are upscaled to about this many pixels
LEGEND_LINES = 3  # fixed, so the figure's size does not depend on text
WHITE, BLACK, RED, GREY = (255, 255, 255), (0, 0, 0), (255, 0, 0), (90, 90, 90)


def save_image(canvas, path):
    """A Pillow image to path, all or nothing (atomic.py), in the format
    its file name's ending names (PNG for an ending Pillow does not know)."""
    ending = os.path.splitext(path)[1].lower()
    kind = Image.registered_extensions().get(ending, 'PNG')
    atomic.write_with(path, lambda f: canvas.save(f, format=kind))


def _font(size=FONT_SIZE):
    # Pillow >= 10.1 bundles a TrueType font (load_default(size)), so text
    # looks the same on every machine and needs no system fonts.
    try:
        return ImageFont.load_default(size)
    except TypeError:  # older Pillow: the fixed bitmap font
        return ImageFont.load_default()


def upscale_factor(rows, cols):
    """Integer nearest-neighbour zoom that makes a cell about TARGET_CELL
    pixels (x3 for CIFAR's 32x32); at least 1."""
    return max(1, int(round(TARGET_CELL / float(max(rows, cols)))))


def _zoom(rgb, factor):
    """(H, W, 3) -> (H*f, W*f, 3), nearest neighbour (no blur, pixels stay
    visible as the blocks the network saw)."""
    return rgb.repeat(factor, axis=0).repeat(factor, axis=1)


def _to_rgb(chw, scale=1.0):
    """(3, H, W) values / scale, clipped to [0, 1], as (H, W, 3) uint8."""
    scaled = np.clip(np.asarray(chw, np.float64) / max(scale, 1e-12), 0, 1)
    return np.round(scaled * 255).astype(np.uint8).transpose(1, 2, 0)


def _map_rgb(part, scale=1.0):
    """A map part as (H, W, 3) uint8: a CCM (3, H, W) in colour, a
    one-channel map (H, W) in grey, values / scale clipped to [0, 1]."""
    part = np.asarray(part)
    if part.ndim == 2:
        part = np.broadcast_to(part, (3,) + part.shape)
    return _to_rgb(part, scale)


def _image_rgb(image):
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image.transpose(1, 2, 0)
    return _to_rgb(image)


def _text_width(draw, text, font):
    return draw.textlength(text, font=font)


def _fit(draw, text, font, width):
    """Shorten text with '...' until it fits `width` pixels."""
    if _text_width(draw, text, font) <= width:
        return text
    while text and _text_width(draw, text + '...', font) > width:
        text = text[:-1]
    return text + '...'


def _wrap(draw, text, font, width):
    """Greedy word wrap to `width` pixels."""
    lines = []
    for word in text.split():
        if lines and _text_width(draw, lines[-1] + ' ' + word, font) <= width:
            lines[-1] += ' ' + word
        else:
            lines.append(word)
    return lines


def _centred(draw, x0, width, y, text, font, fill=BLACK):
    text = _fit(draw, text, font, width)
    x = x0 + (width - _text_width(draw, text, font)) / 2.0
    draw.text((x, y), text, font=font, fill=fill)


class Figure6Layout(object):
    """Where everything of a Figure 6/7 grid goes, in pixels; pure
    arithmetic, no drawing. Column 0 is the original image, column j+1
    class j. Per image: a positive row (and a negative row unless
    positive_only), then a line of scores."""

    def __init__(self, num_classes, num_images, positive_only=False,
                 image_shape=(32, 32), legend_lines=LEGEND_LINES):
        self.rows_per_image = 1 if positive_only else 2
        self.zoom = upscale_factor(*image_shape)
        self.cell_h = image_shape[0] * self.zoom
        self.cell_w = image_shape[1] * self.zoom
        self.columns = num_classes + 1
        self.legend_top = PAD
        self.header_top = PAD + legend_lines * TEXT_H + 4
        self.grid_top = self.header_top + TEXT_H + FRAME + 2
        self.block_h = (self.rows_per_image * self.cell_h
                        + (self.rows_per_image - 1) * ROW_GAP + 2 + TEXT_H)
        self.width = (2 * PAD + self.columns * self.cell_w
                      + (self.columns - 1) * GAP)
        self.height = (self.grid_top + num_images * self.block_h
                       + max(num_images - 1, 0) * BLOCK_GAP + PAD)

    @property
    def size(self):
        """(width, height) of the PNG, as PIL gives it."""
        return self.width, self.height

    def column_x(self, column):
        return PAD + column * (self.cell_w + GAP)

    def cell_box(self, image, row, column):
        """(x0, y0, x1, y1), x1/y1 exclusive, of a cell: row 0 positive
        part, row 1 negative part; column 0 the original, j+1 class j."""
        x = self.column_x(column)
        y = (self.grid_top + image * (self.block_h + BLOCK_GAP)
             + row * (self.cell_h + ROW_GAP))
        return x, y, x + self.cell_w, y + self.cell_h

    def score_top(self, image):
        """y of the score line under an image's cells."""
        _, _, _, y1 = self.cell_box(image, self.rows_per_image - 1, 0)
        return y1 + 2


def figure6_layout(num_classes, num_images, positive_only=False,
                   image_shape=(32, 32)):
    return Figure6Layout(num_classes, num_images, positive_only, image_shape)


def grid_size(num_classes, num_images, positive_only=False,
              image_shape=(32, 32)):
    """(width, height) in pixels of the Figure 6/7 PNG."""
    return figure6_layout(num_classes, num_images, positive_only,
                          image_shape).size


def _frame(draw, box, colour=RED):
    """A FRAME-pixel ring just outside box (the cell's pixels stay)."""
    x0, y0, x1, y1 = box
    for k in range(1, FRAME + 1):
        draw.rectangle([x0 - k, y0 - k, x1 - 1 + k, y1 - 1 + k],
                       outline=colour)


# per method: (short name, what it is, what the number under a cell is)
METHODS = {
    'ccm': ('CCM', "GCM's Class Contribution Maps",
            'class score = mean of its CCM'),
    'cam': ('CAM', 'Class Activation Maps (Zhou et al.) of the last '
            'convolution, upsampled', 'class score = mean of its CAM + '
            "the class's bias"),
    'grad-cam': ('Grad-CAM', 'Grad-CAM (Selvaraju et al.) of the last '
                 'convolution, upsampled, never negative', 'class score'),
}


def legend_text(method, frame, positive_only):
    """The figure's caption, two sentences: which method drew it and how
    to read a cell."""
    short, what, number = METHODS[method]
    return ['%s: %s. Red frame: %s class; number under a cell: %s.'
            % (short, what, frame, number),
            'Cells: positive part max(%s, 0)%s, one brightness scale per '
            'image%s.' % (short, '' if positive_only else
                          ' above negative part max(-%s, 0)' % short,
                          '' if method == 'ccm' else
                          '; grey: the map has one channel')]


def _check_maps(images, maps, per_class):
    """images (N, 3, H, W) and maps (N, [K,] 3 or nothing, H, W) that
    match, or an InputError (a ValueError) that says which shapes do not."""
    lead = 2 if per_class else 1
    if images.ndim != 4 or images.shape[1] != 3:
        raise InputError('images must be (N, 3, H, W), not %s'
                         % (images.shape,))
    if (maps.ndim not in (lead + 2, lead + 3) or
            maps.shape[-2:] != images.shape[2:] or
            len(maps) != len(images) or
            (maps.ndim == lead + 3 and maps.shape[lead] != 3)):
        raise InputError('maps %s do not match images %s: (N, %s3, H, W) or '
                         '(N, %sH, W) expected' % (
                             maps.shape, images.shape, 'K, ' * per_class,
                             'K, ' * per_class))


def figure6(images, ccm, scores, labels, classes, path, positive_only=False,
            frame='true', method='ccm'):
    """Figure 6 (Figure 7 with positive_only, the clipped model).

    N images: images (N, 3, H, W) uint8, ccm (N, K, 3, H, W) for K
    classes, scores (N, K), labels (N,): the class whose cells get the red
    frame, frame='true' (the true class) or 'predicted' (`run_explain`: no
    true label there); the legend and the text under the original say
    which. method: what `ccm` holds, 'ccm', or 'cam' / 'grad-cam' for
    Class Activation Maps (N, K, H, W), drawn in grey; the legend names
    it. Writes a PNG to path (unless path is None) and returns a dict:
    image (the PIL image, which a notebook shows), path, size, layout,
    scales (the per-image intensity scale), labels (the score texts
    drawn, N lists of K strings, = format_score(scores)) and legend (its
    lines)."""
    images, ccm = np.asarray(images), np.asarray(ccm)
    scores, labels = np.asarray(scores), np.asarray(labels)
    _check_maps(images, ccm, per_class=True)
    N, K = ccm.shape[:2]
    if scores.shape != (N, K) or labels.shape != (N,) or len(classes) != K:
        raise InputError('for %d images and %d classes, scores must be %s '
                         'and labels %s, with %d class names: got %s, %s and '
                         '%d' % (N, K, (N, K), (N,), K, scores.shape,
                                 labels.shape, len(classes)))
    layout = figure6_layout(K, N, positive_only, images.shape[2:])
    canvas = Image.new('RGB', layout.size, WHITE)
    draw = ImageDraw.Draw(canvas)
    font = _font()
    legend = legend_text(method, frame, positive_only)
    text_w = layout.width - 2 * PAD
    lines = [line for text in legend
             for line in _wrap(draw, text, font, text_w)]
    if len(lines) > LEGEND_LINES:  # a very narrow figure (2-3 classes)
        lines = lines[:LEGEND_LINES]
        lines[-1] = _fit(draw, lines[-1] + ' ...', font, text_w)
    for i, line in enumerate(lines):
        draw.text((PAD, layout.legend_top + i * TEXT_H), line, font=font,
                  fill=GREY)
    for j, name in enumerate(classes):
        _centred(draw, layout.column_x(j + 1) - GAP // 2,
                 layout.cell_w + GAP, layout.header_top, name, font)

    scales, drawn = [], []
    for i in range(N):
        positive, negative = split_signed(ccm[i])
        # One scale for every cell of this image: brightness is comparable
        # across classes and between the two rows.
        scale = float(max(positive.max(), negative.max()))
        scales.append(scale)
        parts = [positive] if positive_only else [positive, negative]
        box = layout.cell_box(i, 0, 0)
        canvas.paste(Image.fromarray(_zoom(_image_rgb(images[i]),
                                           layout.zoom)), box[:2])
        if not positive_only:
            x0, y0, _, _ = layout.cell_box(i, 1, 0)
            for k, line in enumerate(('upper row:', 'positive',
                                      'lower row:', 'negative')):
                draw.text((x0 + 4, y0 + 4 + k * TEXT_H), line, font=font,
                          fill=GREY)
        _centred(draw, layout.column_x(0), layout.cell_w, layout.score_top(i),
                 '%s: %s' % (frame, classes[labels[i]]), font, GREY)
        texts = [format_score(s) for s in scores[i]]
        drawn.append(texts)
        for j in range(K):
            for row, part in enumerate(parts):
                box = layout.cell_box(i, row, j + 1)
                canvas.paste(Image.fromarray(
                    _zoom(_map_rgb(part[j], scale), layout.zoom)), box[:2])
                if j == labels[i]:
                    _frame(draw, box)
            _centred(draw, layout.column_x(j + 1), layout.cell_w,
                     layout.score_top(i), texts[j], font)
    if path is not None:
        save_image(canvas, path)
    return {'image': canvas, 'path': path, 'size': canvas.size,
            'layout': layout, 'scales': scales, 'labels': drawn,
            'legend': lines}


def figure8(images, ccm_true, path, columns=5, captions=None):
    """Figure 8: pairs (original, positive part of the true class's CCM),
    `columns` pairs a row. Each pair is scaled by its own maximum (there is
    no other class to compare with here). images (M, 3, H, W) uint8,
    ccm_true (M, 3, H, W), or a one-channel map (M, H, W) such as a CAM,
    drawn in grey; captions: optional text under each pair.
    Writes a PNG to path (unless None); returns dict(image (PIL), path,
    size)."""
    images, ccm_true = np.asarray(images), np.asarray(ccm_true)
    _check_maps(images, ccm_true, per_class=False)
    if captions is not None and len(captions) != len(images):
        raise InputError('%d captions for %d images' % (len(captions),
                                                        len(images)))
    M = len(images)
    rows_, cols_ = images.shape[2:]
    zoom = upscale_factor(rows_, cols_)
    cw, ch = cols_ * zoom, rows_ * zoom
    pair_w = 2 * cw + 2          # 2 px between the image and its CCM
    text_h = TEXT_H if captions is not None else 0
    columns = max(1, min(columns, M))
    rows = int(math.ceil(M / float(columns)))
    width = 2 * PAD + columns * pair_w + (columns - 1) * GAP
    height = 2 * PAD + rows * (ch + text_h) + (rows - 1) * GAP
    canvas = Image.new('RGB', (width, height), WHITE)
    draw = ImageDraw.Draw(canvas)
    font = _font()
    for m in range(M):
        x = PAD + (m % columns) * (pair_w + GAP)
        y = PAD + (m // columns) * (ch + text_h + GAP)
        positive, _ = split_signed(ccm_true[m])
        canvas.paste(Image.fromarray(_zoom(_image_rgb(images[m]), zoom)),
                     (x, y))
        canvas.paste(Image.fromarray(_zoom(
            _map_rgb(positive, float(positive.max())), zoom)),
            (x + cw + 2, y))
        if captions is not None:
            _centred(draw, x, pair_w, y + ch + 1, captions[m], font)
    if path is not None:
        save_image(canvas, path)
    return {'image': canvas, 'path': path, 'size': canvas.size}


# ------------------------------------------------------------ choosing

def choose_examples(labels, predicted, classes, per_class=1, seed=0):
    """Indices of correctly classified images, up to per_class of each
    class, drawn with a fixed seed. Ordered round by round (one of every
    class, then a second of every class, ...), so the first n are as
    varied as possible. Classes with no correct image are skipped."""
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    rng = np.random.RandomState(seed)
    picks = []
    for c in range(len(classes)):
        correct = np.flatnonzero((labels == c) & (predicted == c))
        picks.append(rng.permutation(correct)[:per_class])
    return np.array([p[r] for r in range(per_class) for p in picks
                     if r < len(p)], dtype=np.int64)


# ------------------------------------------------------------ commands

def explainable(model, method=None):
    """(Model, method): a Model (or the file of one) and the map its
    figures draw (`Model.figure_method`), or InputError before any
    work."""
    if not isinstance(model, api.Model):
        model = api.load_model(model)
    return model, model.figure_method(method)


def _map_key(method):
    return ('class_contribution_map' if method == 'ccm'
            else 'class_activation_map')


def _positive_only(model, method):
    # the clipped GCM's CWMs and Grad-CAM's ReLU leave nothing negative
    return model.kind == 'gcm-clip' or method == 'grad-cam'


def run_figures(model, out_dir, data_config_override=None, count=None,
                images=None, labels=None, figure8_count=40, seed=0,
                method=None):
    """Figure 6 (figure7.png for a 'gcm-clip' model: positive parts only)
    and Figure 8 for a model (an api.Model or a model file), from
    correctly classified test images of the data it was trained on (or
    from `images` (N, C, H, W), `labels` (N,) given as arrays). count:
    images in Figure 6, default one per class (at most 10). A model with
    CAM instead of CCMs (method None: 'cam', or 'grad-cam') gives
    figure6-METHOD.png and figure8-METHOD.png from those maps. Returns the
    paths written."""
    model, method = explainable(model, method)
    classes = model.classes
    if images is None:
        images, labels = train.load_test_data(model.meta,
                                              data_config_override)
    images, labels = np.asarray(images), np.asarray(labels)
    predicted = model.predict(images).label
    count = count or min(len(classes), 10)
    chosen = choose_examples(labels, predicted, classes,
                             int(math.ceil(count / float(len(classes)))),
                             seed)[:count]
    if not len(chosen):
        raise ExplainError('none of the %d test images is classified '
                           'correctly; nothing to show' % len(images))
    os.makedirs(out_dir, exist_ok=True)
    positive_only = _positive_only(model, method)
    maps = model.explain(images[chosen], method=method)
    if method == 'ccm':
        names = ('figure7.png' if positive_only else 'figure6.png',
                 'figure8.png')
    else:
        names = ('figure6-%s.png' % method, 'figure8-%s.png' % method)
    fig6, fig8 = [os.path.join(out_dir, name) for name in names]
    figure6(images[chosen], maps[_map_key(method)], maps['class_scores'],
            labels[chosen], classes, fig6, positive_only=positive_only,
            method=method)

    more = choose_examples(labels, predicted, classes,
                           int(math.ceil(figure8_count / float(len(classes)))),
                           seed + 1)[:figure8_count]
    if method == 'ccm':
        ccm = model.class_contribution_maps(images[more])
        true_maps = ccm[np.arange(len(more)), labels[more]]
    else:
        true_maps = model.attribution_maps(images[more], method,
                                           labels[more])
    figure8(images[more], true_maps, fig8,
            captions=[classes[c] for c in labels[more]])
    return [fig6, fig8]


def _stems(paths):
    """Output names from file names, made unique (a/cat.png, b/cat.png ->
    cat, cat-2)."""
    seen, out = {}, []
    for p in paths:
        stem = os.path.splitext(os.path.basename(p))[0] or 'image'
        seen[stem] = seen.get(stem, 0) + 1
        out.append(stem if seen[stem] == 1 else '%s-%d' % (stem, seen[stem]))
    return out


def run_explain(model, image_paths, out_dir, top=3, echo=print,
                method=None):
    """Explain a model's decision (an api.Model or a model file) on any
    image files (`read_images`): print the top classes with scores and
    probabilities (the text is returned too) and write, per image,
    <stem>_ccm.png (Figure 6 style; there is no true label, so the red
    frame marks the PREDICTED class) and <stem>_ccm.npz (image uint8
    (3, H, W) as the model saw it, class_weight_map (K, H, W),
    class_contribution_map (K, 3, H, W), class_scores (K,), prob (K,),
    classes (K,) str), loadable with allow_pickle=False. A model with CAM
    instead of CCMs (method None: 'cam', or 'grad-cam') writes
    <stem>_METHOD.png and <stem>_METHOD.npz with class_activation_map
    (K, H, W) and method in place of the CWM and CCM. Both names carry the
    method, so explaining with another method keeps the first one's files
    (one shared .npz name was silently overwritten). Each file is written
    all or nothing (atomic.py)."""
    model, method = explainable(model, method)   # fails before any work
    classes = model.classes
    X, notes = read_images(image_paths, model.input_shape, return_notes=True)
    maps = model.explain(X, method=method)
    os.makedirs(out_dir, exist_ok=True)
    positive_only = _positive_only(model, method)
    keys = api.MAP_KEYS if method == 'ccm' else api.CAM_KEYS
    extra = {} if method == 'ccm' else {'method': np.array(method)}
    lines, name_w = [], max(len(c) for c in classes)
    for i, (path, stem) in enumerate(zip(image_paths, _stems(image_paths))):
        scores, prob = maps['class_scores'][i], maps['prob'][i]
        best = int(np.argmax(scores))
        lines.append('%s%s' % (path, ' (%s)' % notes[i] if notes[i] else ''))
        for rank, j in enumerate(np.argsort(-scores)[:top]):
            lines.append('  %d. %-*s  score %s  prob %5.1f%%'
                         % (rank + 1, name_w, classes[j],
                            format_score(scores[j]),
                            100 * prob[j]))
        png = '%s_%s.png' % (stem, method)
        figure6(X[i:i + 1], maps[_map_key(method)][i:i + 1],
                scores[None], [best], classes, os.path.join(out_dir, png),
                positive_only=positive_only, frame='predicted',
                method=method)
        arrays = dict(extra, image=X[i], classes=np.array(classes),
                      **{k: maps[k][i] for k in keys})
        npz = '%s_%s.npz' % (stem, method)
        atomic.write_with(os.path.join(out_dir, npz),
                          lambda f: np.savez(f, **arrays))
        lines.append('  wrote %s, %s' % (png, npz))
    text = '\n'.join(lines)
    if echo:
        echo(text)
    return text
