"""Training curves of finished runs in one matplotlib figure: evaluation
accuracy and training loss per epoch, one colour per model, a line per run
(seed), the learning-rate drops marked, and Table 3's accuracy of each
model as a dashed line (the paper's figure, on the official data)."""
import os

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

from . import paper
from .report import read_json, read_log

# 1000 x 400 pixels: the size the tests check and the README shows
SIZE_INCHES, DPI = (10, 4), 100
COLOURS = {'gcm': 'tab:blue', 'gcm-clip': 'tab:orange', 'cnn': 'tab:green',
           'gcm-basic': 'tab:red'}


def plot_curves(groups, path):
    """Draw the runs of `groups` ({model: [run folder, ...]}, as
    report.find_runs returns it) to `path` (PNG, or any format matplotlib
    writes by the file's ending). Returns path."""
    fig = Figure(figsize=SIZE_INCHES, dpi=DPI)
    FigureCanvasAgg(fig)
    acc_ax, loss_ax = fig.subplots(1, 2)
    drops, eval_sets = set(), set()
    for model in sorted(groups):
        for i, run in enumerate(groups[model]):
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
                         label=None if i else model)
            acc_ax.plot(epochs, [100 * e['eval_acc'] for e in log], **style)
            loss_ax.plot(epochs, [e['train_loss'] for e in log], **style)
        if model in paper.TABLE3:
            acc_ax.axhline(paper.TABLE3[model]['accuracy'], ls='--', lw=1,
                           color=COLOURS.get(model),
                           label='%s, paper' % model)
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
    fig.savefig(path)
    return path
