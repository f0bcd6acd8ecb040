"""The documentation as a reader meets it: every relative link and image
points at a file that exists (and a link to a section, at a heading of
that page), docs/cli.md is what the parser says today,
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
    """(path, section) of each link to this repository; path '' is the page
    itself, section '' its top."""
    for target in LINK.findall(text):
        if not re.match(r'^[a-z]+:', target):
            path, _, section = target.partition('#')
            yield path, section


def sections(text):
    """The anchors GitHub gives a page's headings (code blocks skipped):
    lower case, punctuation dropped, spaces as hyphens."""
    anchors, fenced = set(), False
    for line in text.splitlines():
        if line.startswith('```'):
            fenced = not fenced
        elif not fenced and re.match(r'#{1,6} ', line):
            heading = line.lstrip('#').strip().lower()
            anchors.add(re.sub(r'[^\w\- ]', '', heading).replace(' ', '-'))
    return anchors


@pytest.mark.parametrize('page', [p for p in PAGES if os.path.exists(p)],
                         ids=lambda p: os.path.relpath(p, ROOT))
def test_every_relative_link_and_image_exists(page):
    with open(page, encoding='utf-8') as f:
        text = f.read()
    broken = []
    for path, section in relative_links(text):
        target = os.path.normpath(os.path.join(os.path.dirname(page), path)
                                  if path else page)
        if not os.path.exists(target):
            broken.append(path)
        elif section and target.endswith('.md'):
            with open(target, encoding='utf-8') as f:
                if section not in sections(f.read()):
                    broken.append(path + '#' + section)
    assert not broken, broken


def test_the_link_check_sees_links_and_sections():
    text = 'a [b](docs/x.md#y) ![c](d.png "t") [e](https://f) [g](#h)'
    assert list(relative_links(text)) == [('docs/x.md', 'y'), ('d.png', ''),
                                          ('', 'h')]
    page = ('# The control: what the data costs\n```sh\n# not a heading\n'
            '```\n## Run `train`, then table3\n')
    assert sections(page) == {'the-control-what-the-data-costs',
                              'run-train-then-table3'}


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
