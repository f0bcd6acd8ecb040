"""Where the files that ship with the project are: the demo model and the
sample images (`gcm-lasagne demo`, examples/explain.py).

In the repository they are at the top, in models/<name>/ (where
researchers look for trained models) and samples/<name>/. A wheel
(`pip install .`) carries copies of those folders inside the package, as
gcm_lasagne/_shipped/models/ and gcm_lasagne/_shipped/samples/
(pyproject.toml maps them there), so an installed `gcm-lasagne demo` finds
them from any folder; every models/*/model.npz ships, a run's
checkpoint.npz does not. To make another model the demo's, put its folder
under models/ and change DEMO_MODEL.
"""
import glob
import os

from .images import IMAGE_EXTENSIONS

DEMO_MODEL = 'gcm-cifar10jpeg'  # a folder of models/ with a model.npz
SAMPLES = 'cifar10-test'        # a folder of samples/: <class>/<image>

_PACKAGE = os.path.dirname(os.path.abspath(__file__))
_INSTALLED = os.path.join(_PACKAGE, '_shipped')


def root():
    """The folder that holds models/ and samples/: the copy inside the
    package if there is one (only an installed wheel has it), else the
    repository's root (a checkout, or `pip install -e .`)."""
    if os.path.isdir(_INSTALLED):
        return _INSTALLED
    return os.path.dirname(_PACKAGE)


def model_path(name=DEMO_MODEL):
    """models/<name>/model.npz."""
    return os.path.join(root(), 'models', name, 'model.npz')


def sample_paths(name=SAMPLES):
    """The images of samples/<name>/<class>/, sorted; each one's class is
    its folder's name."""
    found = glob.glob(os.path.join(root(), 'samples', name, '*', '*'))
    return sorted(p for p in found if p.lower().endswith(IMAGE_EXTENSIONS))
