"""The documentation as a reader meets it: every relative link and image
points at a file that exists, docs/cli.md is what the parser says today,
and the README names no issue numbers and no folder of the machine that
ran something."""
import glob
import os
import re

import pytest

from gcm_lasagne import clidoc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = sorted(glob.glob(os.path.join(ROOT, 'docs', '*.md'))
               + glob.glob(os.path.join(ROOT, 'models', '*', 'README.md'))
               + [os.path.join(ROOT, 'README.md'),
                  os.path.join(ROOT, 'runs-in-progress', 'README.md'),
                  os.path.join(ROOT, 'runs-finished', 'README.md')])
# [text](target) and ![alt](target); a target ends at ')' or a space
LINK = re.compile(r'!?\[[^\]]*\]\(([^)\s]+)[^)]*\)')


def relative_links(text):
    for target in LINK.findall(text):
        if not re.match(r'^[a-z]+:', target) and not target.startswith('#'):
            yield target.split('#')[0]


@pytest.mark.parametrize('page', [p for p in PAGES if os.path.exists(p)],
                         ids=lambda p: os.path.relpath(p, ROOT))
def test_every_relative_link_and_image_exists(page):
    with open(page, encoding='utf-8') as f:
        text = f.read()
    missing = [t for t in relative_links(text) if not os.path.exists(
        os.path.normpath(os.path.join(os.path.dirname(page), t)))]
    assert not missing, missing


def test_the_link_check_sees_links():
    text = 'a [b](docs/x.md#y) ![c](d.png "t") [e](https://f) [g](#h)'
    assert list(relative_links(text)) == ['docs/x.md', 'd.png']


def test_cli_page_is_generated_from_the_parser():
    with open(os.path.join(ROOT, 'docs', 'cli.md'), encoding='utf-8') as f:
        assert f.read() == clidoc.markdown(), (
            'docs/cli.md is out of date: python -m gcm_lasagne.clidoc > '
            'docs/cli.md')


def test_readme_is_a_front_page():
    with open(os.path.join(ROOT, 'README.md'), encoding='utf-8') as f:
        text = f.read()
    assert len(text.splitlines()) < 200
    assert not re.search(r'\bissues? #?\d', text, re.I)
    assert '/work/' not in text
