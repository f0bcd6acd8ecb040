"""docs/cli.md from the argument parser itself, so that the page cannot
drift from the commands (tests/test_docs.py compares):

    .venv/bin/python -m gcm_lasagne.clidoc > docs/cli.md
"""
import argparse
import os

from .cli import build_parser

INTRO = """# Command line

`run_cifar10.py` and the installed `gcm-lasagne` are one command. Global
options (`--runs`, `--results`) go before the command; with no command it
runs `reproduce` with its defaults. A bad option, file or folder ends in
one `error: ...` line on stderr and a non-zero exit.

This page is generated from the argument parser
(`python -m gcm_lasagne.clidoc > docs/cli.md`); a test keeps it current.
"""


def _commands(parser):
    for action in parser._actions:  # argparse keeps subparsers nowhere else
        if isinstance(action, argparse._SubParsersAction):
            return action.choices
    return {}


def markdown():
    """The page: the top-level help, then each command's."""
    columns = os.environ.get('COLUMNS')
    os.environ['COLUMNS'] = '80'  # argparse wraps to the terminal's width
    try:
        parser = build_parser(prog='run_cifar10.py')
        parts = [INTRO, '```', parser.format_help().rstrip(), '```']
        for name, command in _commands(parser).items():
            parts += ['', '## %s' % name, '', '```',
                      command.format_help().rstrip(), '```']
    finally:
        if columns is None:
            del os.environ['COLUMNS']
        else:
            os.environ['COLUMNS'] = columns
    return '\n'.join(parts) + '\n'


if __name__ == '__main__':
    print(markdown(), end='')
