"""Training curves of finished runs in one matplotlib figure: evaluation
accuracy and training loss per epoch, one colour per model, a line per run
(seed), dash-dotted for a variant of a paper model's recipe, the
learning-rate drops marked, and each model's published accuracy as a dashed
line (Table 3's, or a control's source; on the official data)."""
import io
import os

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

from . import atomic, paper
from .report import group_name, published, read_json, read_log

# 1000 x 400 pixels: the size the tests check and the README shows
SIZE_INCHES, DPI = (10, 4), 100
COLOURS = {'gcm': 'tab:blue', 'gcm-clip': 'tab:orange', 'cnn': 'tab:green',
           'gcm-basic': 'tab:red', 'resnet20': 'tab:purple'}


def plot_curves(groups, path):
    """Draw the runs of `groups` ({(model, recipe label): [run folder,
    ...]}, as report.find_runs returns it) to `path` (PNG, or any format
    matplotlib writes by the file's ending). Returns path."""
    fig = Figure(figsize=SIZE_INCHES, dpi=DPI)
    FigureCanvasAgg(fig)
    acc_ax, loss_ax = fig.subplots(1, 2)
    drops, eval_sets = set(), set()
    for model, label in sorted(groups, key=lambda k: (str(k[0]), k[1])):
        variant = bool(label) and model in paper.TABLE3
        for i, run in enumerate(groups[model, label]):
            log = read_log(run)
            if not log:
                continue
            config = read_json(os.path.join(run, 'config.json'))
            drops.update((step, config['lr_factor'])
                         for step in config['lr_steps'])
            eval_sets.add('validation' if config.get('validation') else
                          'test')
            epochs = [e['epoch'] for e in log]
            style = dict(color=COLOURS.get(model), lw=1,
                         ls='-.' if variant else '-',
                         label=None if i else group_name(model, label))
            acc_ax.plot(epochs, [100 * e['eval_acc'] for e in log], **style)
            loss_ax.plot(epochs, [e['train_loss'] for e in log], **style)
    for model in sorted({str(model) for model, _ in groups}):
        accuracy = published(model)[1]
        if accuracy is not None:
            acc_ax.axhline(accuracy, ls='--', lw=1, color=COLOURS.get(model),
                           label='%s, published' % model)
    for n, (step, factor) in enumerate(sorted(drops)):
        for ax in (acc_ax, loss_ax):
            # the rate changes between epoch `step` and the next
            ax.axvline(step + 0.5, color='0.5', ls=':', lw=1,
                       label=None if n or ax is loss_ax else
                       'learning rate x%g' % factor)
    acc_ax.set_ylabel('%s accuracy (%%)' % ' / '.join(sorted(eval_sets)))
    loss_ax.set_ylabel('training loss')
    loss_ax.set_yscale('log')
    # a log axis over less than a decade would show one labelled tick
    loss_ax.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
    loss_ax.yaxis.set_major_formatter(FormatStrFormatter('%g'))
    loss_ax.yaxis.set_minor_formatter(NullFormatter())
    for ax in (acc_ax, loss_ax):
        ax.set_xlabel('epoch')
        ax.grid(alpha=0.3)
    acc_ax.legend(loc='lower right', fontsize='small', ncol=2)
    fig.tight_layout()
    image = io.BytesIO()  # the format from the file's ending
    fig.savefig(image, format=os.path.splitext(path)[1][1:] or 'png')
    atomic.write_bytes(path, image.getvalue())
    return path
