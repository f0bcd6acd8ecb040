"""A finished run as a model folder to share: its final weights, recipe,
log and metrics, with the data set named instead of a folder of the machine
it was trained on; or, without the weights, as a run's evidence (its
recipe, log and metrics: what Table 3 and the curves read)."""
import json
import os

from . import atomic, checkpoint, report

FILES = ('log.csv', 'metrics.json')


def export_run(run, out, data_name=None, weights=True):
    """Write RUN's model.npz (unless not `weights`), config.json, log.csv
    and metrics.json to the folder `out`, the config's `data` replaced by
    `data_name` (default: the data folder's name, e.g. 'cifar10-jpeg').
    Returns the written paths."""
    names = (('model.npz',) if weights else ()) + ('config.json',) + FILES
    missing = [f for f in names if not os.path.isfile(os.path.join(run, f))]
    if missing:
        raise checkpoint.CheckpointError(
            '%s is not a finished run (missing %s)' % (run, ', '.join(missing)))
    taken = [f for f in names if os.path.exists(os.path.join(out, f))]
    if taken:
        raise checkpoint.CheckpointError(
            '%s already holds %s; export into a new folder'
            % (out, ', '.join(taken)))
    if weights:
        meta, values, arrays = checkpoint.read(os.path.join(run, 'model.npz'))
        config = dict(meta['config'])
    else:
        config, _ = report.check_run(run)
    config['data'] = data_name or report.data_name(config)
    os.makedirs(out, exist_ok=True)
    written = []
    if weights:
        meta['config'] = config
        written.append(os.path.join(out, 'model.npz'))
        checkpoint.write(written[-1], meta, values, **arrays)
    written.append(os.path.join(out, 'config.json'))
    atomic.write_text(written[-1], json.dumps(config, indent=2,
                                              sort_keys=True))
    for name in FILES:
        with open(os.path.join(run, name), 'rb') as f:
            atomic.write_bytes(os.path.join(out, name), f.read())
        written.append(os.path.join(out, name))
    return written
