"""Every numeric option of every command is checked: its type comes from
options.OPTIONS, and a bad value of each ends in one line and exit 2,
before anything is loaded."""
import argparse
import re

import pytest

from gcm_lasagne import cli, options, train


def commands():
    parser = cli.build_parser()
    yield [], parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield [name], sub


def numeric_options():
    """(command words, option string, dest, positional filler) of every
    option that takes a number, on every command."""
    for words, parser in commands():
        filler = []
        for action in parser._actions:
            if not action.option_strings and not isinstance(
                    action, argparse._SubParsersAction):
                filler += ['x'] * (1 if action.nargs in (None, '+') else 0)
        for action in parser._actions:
            if action.option_strings and (
                    action.dest in options.OPTIONS or action.type in (int,
                                                                      float)):
                yield words, action.option_strings[-1], action, filler


CASES = list(numeric_options())


def test_the_table_covers_the_commands():
    names = {(tuple(w), o) for w, o, _, _ in CASES}
    for expected in [(('train',), '--epochs'), (('train',), '--seed'),
                     (('reproduce',), '--seeds'), (('faithfulness',), '--seed'),
                     (('explain',), '--top'), (('train',), '--image-size')]:
        assert expected in names
    assert len(CASES) > 30


@pytest.mark.parametrize('words, option, action, filler', CASES,
                         ids=['%s %s' % (' '.join(c[0]) or '-', c[1])
                              for c in CASES])
def test_every_numeric_option_refuses_a_bad_value_in_one_line(
        capsys, words, option, action, filler):
    assert action.type is options.OPTIONS.get(action.dest), (
        '%s takes a plain %s: give it a limit in options.OPTIONS'
        % (option, getattr(action.type, '__name__', action.type)))
    limit = options.OPTIONS[action.dest]
    values = [limit.bad] * (action.nargs if isinstance(action.nargs, int)
                            else 1)
    with pytest.raises(SystemExit) as stop:
        cli.main(words + [option] + values + filler)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'must be %s' % limit.what in err, err


def test_configs_from_python_are_held_to_the_same_limits():
    for key in train.CHECKED:
        bad = options.OPTIONS[key].kind(options.OPTIONS[key].bad)
        with pytest.raises(train.TrainingError,
                           match=re.escape(options.OPTIONS[key].what)):
            train.check_config(train.default_config(**{key: bad}))
    with pytest.raises(train.TrainingError, match='lr-steps'):
        train.check_config(train.default_config(lr_steps=[0]))
