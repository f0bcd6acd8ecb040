"""Stopping a training run from outside without losing more than the
current epoch: SIGTERM (what a scheduler sends when it preempts, requeues
or cancels a job, and what `kill`, `docker stop` and systemd send) is
noted when it arrives and acted on where the training loop asks, between
two steps. Acting at once, inside a step or a checkpoint write, would risk
the one thing a resume needs: the checkpoint on disk.

The checkpoint on disk is the run's position: the last finished epoch.
The steps of an epoch in progress are dropped; the resume repeats them
from the same random state, so it still ends bit for bit where an
uninterrupted run ends.
"""
import contextlib
import signal
import threading

from .errors import TrainingError

# what a shell reports for a process that SIGTERM ended; Slurm records it
# as the job's exit code, and it is never 0, so nothing that waits for a
# finished run (a dependent job, `&&`) mistakes a stopped one for it
EXIT_STATUS = 128 + signal.SIGTERM


class Stopped(TrainingError):
    """The run stopped at a safe point because it was asked to (one line
    saying what is kept)."""


class Request:
    """Whether a stop was asked for, and by which signal."""

    def __init__(self):
        self.signal = None

    def __bool__(self):
        return self.signal is not None

    def check(self, epoch, steps_done, steps, last_saved):
        """Raise Stopped if a stop was asked for. `epoch` is the epoch in
        progress (or about to start, steps_done 0), `last_saved` the epoch
        of the checkpoint on disk (0: none)."""
        if self:
            raise Stopped(message(signal.Signals(self.signal).name, epoch,
                                  steps_done, steps, last_saved))


def message(name, epoch, steps_done, steps, last_saved):
    """What stopped and what is kept, in one line."""
    if steps_done:
        where = 'in epoch %d after %d of its %d steps, which are dropped' % (
            epoch, steps_done, steps)
    else:
        where = 'before epoch %d' % epoch
    if last_saved:
        kept = ('the checkpoint of epoch %d is kept; continue with --resume '
                'or --auto-resume' % last_saved)
    else:
        kept = ('no epoch had finished, so there is no checkpoint; '
                '--auto-resume starts the run again')
    return 'stopped by %s %s: %s' % (name, where, kept)


@contextlib.contextmanager
def on_sigterm():
    """While inside, SIGTERM sets the Request this yields instead of ending
    the process; the previous handler comes back afterwards. Outside the
    main thread no handler can be set: the Request then stays unset."""
    request = Request()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def note(signum, frame):
        request.signal = signum

    previous = signal.signal(signal.SIGTERM, note)
    try:
        yield request
    finally:
        signal.signal(signal.SIGTERM, previous)
