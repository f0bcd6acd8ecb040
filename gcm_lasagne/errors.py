"""The errors a user can cause, each with a one-line message; the command
line prints them as `error: <message>` and exits 1 (no traceback)."""


class DataError(Exception):
    """Bad or missing input data. The message is always one line."""

    def __init__(self, message):
        # Messages quote paths and library errors; fold any newline so the
        # CLI's `error: <message>` stays one line.
        super().__init__(' '.join(str(message).split()))


class InputError(ValueError):
    """Images or a request a model cannot take (wrong shape, dtype or value
    range; maps from a model that has none). One sentence, one line."""


class TrainingError(Exception):
    """A training request that cannot run as asked (an option out of range,
    a run folder it would harm). One line."""


class InputTypeError(InputError, TypeError):
    """An argument of the wrong type (a float batch size, None for a file
    name): a TypeError to Python, and an InputError, so the command line
    prints it as one line too."""
