"""Generative Contribution Mappings (Arai & Nagao) in Theano and Lasagne.

Importing the package configures Theano (see `compat`) before anything else
imports it.
"""
from . import compat  # noqa: F401  (must come first)
from . import fastconv  # noqa: F401,E402  (registers the CPU convolutions)
from . import layers, models, paper  # noqa: F401,E402

__version__ = '0.1.0'
