"""Every numeric option of every command with its range, in one table:
the command line takes its argument types from here, train.check_config
the same limits for configs given through Python, and
tests/test_options.py tries a bad value of each."""
import argparse
import math


class Limit(object):
    """An argparse type that also checks the value's range, with a bad
    example for the tests. Called on text it returns the value or raises
    argparse's one-line error."""

    def __init__(self, kind, ok, what, bad):
        self.kind, self.ok, self.what, self.bad = kind, ok, what, bad
        self.__name__ = kind.__name__  # argparse names the type in errors

    def __call__(self, text):
        try:
            value = self.kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError('%r: must be %s'
                                             % (text, self.what))
        if not self.ok(value):  # NaN fails every comparison
            raise argparse.ArgumentTypeError('%s: must be %s'
                                             % (text, self.what))
        return value


POSITIVE = Limit(int, lambda v: v >= 1, 'a positive integer', '0')
COUNT = Limit(int, lambda v: v >= 0, 'a whole number >= 0', '-1')
SEED = Limit(int, lambda v: 0 <= v < 2 ** 32, 'in 0..2**32-1 (a numpy seed)',
             '-1')

# option (as argparse's dest) -> its limit
OPTIONS = {
    'epochs': POSITIVE,
    'batch_size': POSITIVE,
    'learning_rate': Limit(float, lambda v: 0 < v < math.inf,
                           'a positive finite number', 'nan'),
    'lr_steps': POSITIVE,
    'lr_factor': Limit(float, lambda v: 0 < v <= 1, 'in (0, 1]: the rate '
                       'is multiplied by it at each step', '1.5'),
    'momentum': Limit(float, lambda v: 0 <= v < 1, 'in [0, 1)', '1'),
    'weight_decay': Limit(float, lambda v: 0 <= v < math.inf,
                          'a finite number >= 0', '-0.0001'),
    'pad': Limit(int, lambda v: v >= 0, 'a number of pixels >= 0', '-1'),
    'validation': Limit(int, lambda v: v >= 0, 'a number of images >= 0',
                        '-5'),
    'train_subset': Limit(int, lambda v: v >= 0,
                          'a number of images >= 0 (0: all)', '-5'),
    'seed': SEED,
    'seeds': POSITIVE,
    'image_size': POSITIVE,
    'top': POSITIVE,
    'images': POSITIVE,
    'steps': POSITIVE,
    'ig_steps': POSITIVE,
    'randomisation_images': COUNT,
    'count': POSITIVE,
}

