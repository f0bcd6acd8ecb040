#!/usr/bin/env python
"""The paper's entry point: `python run_cifar10.py [COMMAND ...]` is the
`gcm-lasagne` command (gcm_lasagne/cli.py); with no command it reproduces
the paper (train GCM, clipped GCM and the CNN, then Table 3)."""
import sys

import gcm_lasagne  # noqa: F401  (configures Theano first)
from gcm_lasagne.cli import main

if __name__ == '__main__':
    sys.exit(main())
