# SPDX-License-Identifier: Apache-2.0
"""The API reference lists each public module once, by its full name.

Read from the reST sources, without building the site: the "API reference"
toctree of ``docs/index.rst`` names one page per public module, then the
page of the internal modules. The sidebar shows each page's title, so a
public page's title must be the module's full name as plain text (a
``:mod:`` role renders as code, which does not wrap and is cut off).
"""

import importlib
import pathlib
import re

import pytest

DOCS = pathlib.Path(__file__).resolve().parent.parent / 'docs'

#: The public modules of today. A new public module needs only its line in
#: the toctree (and its page); this list checks that none of these is lost.
PUBLIC = [
    'occo.util.communication',
    'occo.util.communication.comm',
    'occo.util.communication.mq',
    'occo.util.communication.memory',
    'occo.util.communication.message_types',
    'occo.util.communication.message_context',
    'occo.util.communication.codec',
    'occo.util.communication.settings',
    'occo.util.config',
    'occo.util.factory',
    'occo.util.exceptions',
    'occo.util.communication.cli',
    'occo.util.communication.telemetry',
    'occo.util.communication.testing',
]
#: Internal modules of today: an application does not import them.
INTERNAL = [
    'occo.util.communication.' + name for name in (
        'amqp_role', 'amqp_loop', 'amqp_frames', 'pika_internals',
        'reply_slot', 'failures', 'dispatch', 'safe_yaml', 'remote_errors',
        'json_text', 'diagnose',
        'bench', 'demo')
]
INTERNALS_PAGE = 'api/internals'


def toctree_entries(page, caption):
    """The documents of the toctree with this caption, in order."""
    lines = (DOCS / page).read_text().splitlines()
    for n, line in enumerate(lines):
        if line.strip() != '.. toctree::':
            continue
        body = []
        for item in lines[n + 1:]:
            if item.strip() and not item.startswith(' '):
                break
            body.append(item.strip())
        if ':caption: {}'.format(caption) in body:
            return [entry for entry in body
                    if entry and not entry.startswith(':')]
    pytest.fail('{} has no toctree with caption {!r}'.format(page, caption))


def title(document):
    """The title of a page: the text above the first underline."""
    lines = (DOCS / (document + '.rst')).read_text().splitlines()
    for above, line in zip(lines, lines[1:]):
        if re.fullmatch(r'(=+|-+|~+)', line) and above.strip() and \
                not above.startswith('..'):
            return above
    pytest.fail('{} has no title'.format(document))


def automodules(document):
    return re.findall(r'^\.\. automodule:: (\S+)$',
                      (DOCS / (document + '.rst')).read_text(), re.M)


API = toctree_entries('index.rst', 'API reference')
PUBLIC_PAGES = [entry for entry in API if entry != INTERNALS_PAGE]


def test_api_index_ends_with_the_internal_modules():
    assert API[-1] == INTERNALS_PAGE
    assert title(INTERNALS_PAGE) == 'Internal modules'


def test_api_index_lists_each_public_module_once_by_full_name():
    titles = [title(page) for page in PUBLIC_PAGES]
    assert sorted(set(titles)) == sorted(titles), titles
    for module in PUBLIC:
        assert titles.count(module) == 1, module


@pytest.mark.parametrize('page', PUBLIC_PAGES)
def test_api_page_is_titled_by_the_module_it_documents(page):
    name = title(page)
    assert re.fullmatch(r'\w+(\.\w+)+', name), name   # no markup
    importlib.import_module(name)
    assert automodules(page) == [name]


def test_api_index_lists_no_internal_module():
    titles = {title(page) for page in PUBLIC_PAGES}
    assert titles.isdisjoint(INTERNAL)


def test_internals_page_documents_each_internal_module_under_its_name():
    text = (DOCS / (INTERNALS_PAGE + '.rst')).read_text()
    headings = re.findall(r'^(occo\.\S+)\n~+$', text, re.M)
    assert headings == automodules(INTERNALS_PAGE)
    assert set(INTERNAL) <= set(headings)
    for name in headings:
        importlib.import_module(name)


def test_no_module_is_documented_twice():
    documented = [name for page in API for name in automodules(page)]
    assert sorted(set(documented)) == sorted(documented)
