# SPDX-License-Identifier: Apache-2.0
"""Every inline code sample of README.rst and docs/ runs (or loads).

The example files under ``docs/examples/`` are run by test_examples.py;
this covers the literal blocks written in the pages themselves. A block
that parses as Python is executed in a namespace with a component's usual
names (``comm``, ``cfg`` on the memory backend, ``DefaultYAMLConfig``);
a ``code-block:: yaml`` block must load safely and give valid settings.
Shell commands and printed output do not parse as Python and are skipped.
"""

import ast
import logging
import pathlib
import re

import pytest

import occo.util.communication as comm
from occo.util.communication.settings import Settings
from occo.util.config import DefaultYAMLConfig, yaml_load_safe

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = [ROOT / 'README.rst'] + sorted((ROOT / 'docs').glob('*.rst'))


def literal_blocks(path):
    """``(kind, line, text)`` of each literal block: kind is the
    ``code-block`` language, or ``None`` for a ``::`` block."""
    lines = path.read_text().splitlines()
    blocks = []
    for n, line in enumerate(lines):
        match = re.match(r'\s*\.\. code-block:: (\w+)', line)
        opens_block = match or (line.rstrip().endswith('::')
                                and not line.strip().startswith('.. '))
        if not opens_block:
            continue
        indent = len(line) - len(line.lstrip())
        body, i = [], n + 1
        while i < len(lines) and (not lines[i].strip() or
                                  len(lines[i]) - len(lines[i].lstrip()) > indent):
            body.append(lines[i])
            i += 1
        text = _dedent(body)
        if text.strip():
            blocks.append((match.group(1) if match else None, n + 1, text))
    return blocks


def _dedent(lines):
    widths = [len(line) - len(line.lstrip()) for line in lines if line.strip()]
    cut = min(widths) if widths else 0
    return '\n'.join(line[cut:] for line in lines).strip('\n') + '\n'


def _python(text):
    try:
        ast.parse(text)
    except SyntaxError:
        return False
    return not text.lstrip().startswith('>>>')


SAMPLES = [pytest.param(kind, text, id='{}:{}'.format(path.name, line))
           for path in PAGES for kind, line, text in literal_blocks(path)
           if kind == 'yaml' or (kind in (None, 'python') and _python(text))]


def test_the_pages_have_samples():
    assert len(SAMPLES) >= 5


@pytest.fixture
def logging_restored():
    """A sample may configure logging, as an application does (the
    Logging section quiets pika): undo it for the tests that follow."""
    root = logging.getLogger()
    handlers, root_level = list(root.handlers), root.level
    levels = {name: logger.level for name, logger
              in logging.root.manager.loggerDict.items()
              if isinstance(logger, logging.Logger)}
    yield
    root.handlers[:] = handlers
    root.setLevel(root_level)
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger):
            logger.setLevel(levels.get(name, logging.NOTSET))


@pytest.mark.parametrize('kind, text', SAMPLES)
def test_sample_runs(kind, text, tmp_path, monkeypatch, logging_restored):
    if kind == 'yaml':
        config = yaml_load_safe(text)
        assert isinstance(config, dict)
        for section in config.values():
            Settings(section)
        return
    queue = 'doc-' + tmp_path.name
    (tmp_path / 'config.yaml').write_text(
        'mqconfig: {{protocol: memory, queue: {0}, rpc_timeout: 0.2}}\n'.format(queue))
    monkeypatch.chdir(tmp_path)
    namespace = {'comm': comm, 'DefaultYAMLConfig': DefaultYAMLConfig,
                 'cfg': DefaultYAMLConfig((tmp_path / 'config.yaml').read_text()),
                 'core_func': print}
    exec(compile(text, '<sample>', 'exec'), namespace)
