# SPDX-License-Identifier: Apache-2.0
"""docs/migrating.rst: every row of its table has one "after" snippet, and it runs.

Each row of the page's ``list-table`` is one difference from the original
package. Its first cell, ``:ref:`N <migrate-name>```, links to the label of
its snippet, below the table; between that label and the next, the page
holds exactly one literal block, which is Python. The blocks are found as
tests/test_doc_snippets.py finds them (its ``literal_blocks``), and run in
the namespace it gives every page's samples: ``comm``, ``cfg`` (on the
``memory`` backend) and ``DefaultYAMLConfig``, in a temporary directory that
holds ``config.yaml``. A row without its snippet, a snippet no row links
to, or a snippet that fails, fails here, named by its row.
"""

import ast
import pathlib
import re

import pytest

import occo.util.communication as comm
import test_doc_snippets as doc_snippets
from occo.util.config import DefaultYAMLConfig

PAGE = pathlib.Path(__file__).resolve().parent.parent / 'docs' / 'migrating.rst'
#: The first cell of a table row: ``   * - :ref:`7 <migrate-name>```.
ROW = re.compile(r'^\s*\* - :ref:`(\d+) <(migrate-[\w-]+)>`\s*$')
#: The label of a snippet: ``.. _migrate-name:``.
LABEL = re.compile(r'^\.\. _(migrate-[\w-]+):\s*$')

# A snippet may configure logging, as an application does: the fixture of
# test_doc_snippets undoes it.
logging_restored = doc_snippets.logging_restored


def table_rows(lines):
    """``[(number, label)]`` of the table's rows, in page order."""
    return [(int(m.group(1)), m.group(2))
            for m in map(ROW.match, lines) if m]


def snippets(path):
    """``{label: [(line, text)]}``: the literal blocks after each label,
    up to the next label."""
    lines = path.read_text().splitlines()
    labels = [(n + 1, m.group(1)) for n, m in enumerate(map(LABEL.match, lines))
              if m]
    found = {label: [] for _, label in labels}
    for _, line, text in doc_snippets.literal_blocks(path):
        owners = [label for at, label in labels if at < line]
        if owners:
            found[owners[-1]].append((line, text))
    return found


ROWS = table_rows(PAGE.read_text().splitlines())
SNIPPETS = snippets(PAGE)


def test_the_rows_are_numbered_in_order():
    assert [number for number, _ in ROWS] == list(range(1, len(ROWS) + 1))
    assert len(ROWS) >= 20


def test_each_row_links_to_a_snippet_of_its_own():
    labels = [label for _, label in ROWS]
    assert len(set(labels)) == len(labels), 'two rows link to one snippet'
    assert labels == list(SNIPPETS), 'rows and snippets differ, or their order does'


@pytest.mark.parametrize('label', list(SNIPPETS))
def test_each_snippet_is_one_python_block(label):
    blocks = SNIPPETS[label]
    assert len(blocks) == 1, '{}: {} literal blocks'.format(label, len(blocks))
    (line, text), = blocks
    ast.parse(text, '{}:{}'.format(PAGE.name, line))


@pytest.mark.usefixtures('logging_restored')
@pytest.mark.parametrize('number, label', ROWS,
                         ids=['{}-{}'.format(n, label) for n, label in ROWS])
def test_after_snippet_runs(number, label, tmp_path, monkeypatch):
    blocks = SNIPPETS.get(label)
    if not blocks:
        pytest.fail('row {} links to {}, which has no snippet'.format(number, label))
    line, text = blocks[0]
    queue = 'migrating-' + tmp_path.name
    (tmp_path / 'config.yaml').write_text(
        'mqconfig: {{protocol: memory, queue: {0}, rpc_timeout: 0.2}}\n'.format(queue))
    monkeypatch.chdir(tmp_path)
    namespace = {'comm': comm, 'DefaultYAMLConfig': DefaultYAMLConfig,
                 'cfg': DefaultYAMLConfig('config.yaml')}
    exec(compile(text, '{}:{}'.format(PAGE.name, line), 'exec'), namespace)
