"""Generative Contribution Mappings (Arai & Nagao) in Theano and Lasagne.

Importing the package configures Theano (see `compat`) before anything else
imports it. From Python (module `api`):

    model = gcm_lasagne.load_model(path)          # a Model
    images = gcm_lasagne.read_images(paths, model.input_shape)
    label, scores, prob = model.predict(images)
    cwm = model.class_weight_maps(images)         # (N, K, H, W)
    ccm = model.class_contribution_maps(images)   # (N, K, C, H, W)
"""
from . import compat  # noqa: F401  (must come first)
from . import fastconv  # noqa: F401,E402  (registers the CPU convolutions)
from . import convfuse  # noqa: F401,E402  (and their fused inference form)
from . import layers, models, paper  # noqa: F401,E402
from .api import Model, load_model  # noqa: F401,E402
from .images import read_images  # noqa: F401,E402

__version__ = '0.1.0'
