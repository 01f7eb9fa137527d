# SPDX-License-Identifier: Apache-2.0
"""Sphinx configuration of the occo.util.communication documentation.

Build with warnings as errors and every reference checked::

    python -m sphinx -W -n -b html docs docs/_build/html

The build never needs the network. Intersphinx reads inventories from local
files only: ``docs/_inventories/`` (the Python 3.11 inventory is kept there),
then the one Debian's ``python3.11-doc`` installs. A project whose inventory
is not found is left out of ``intersphinx_mapping``, and references into it
are ignored (``nitpick_ignore_regex``) instead of failing the build. Set
``OCCO_DOCS_ONLINE=1`` to fetch the missing inventories from the web.
"""

import importlib
import os
import re
import sys

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from occo.util.communication import __version__  # noqa: E402

project = 'occo.util.communication'
author = 'OCCO developers'
copyright = 'OCCO developers'
version = release = __version__

extensions = ['sphinx.ext.autodoc', 'sphinx.ext.intersphinx']

exclude_patterns = ['_build', '_inventories', 'examples']
html_theme = 'alabaster'
# Room for full module names in the sidebar, and for code lines of about 90
# characters; _static/occo.css wraps what is still longer.
html_theme_options = {'page_width': '1120px', 'sidebar_width': '290px'}
html_static_path = ['_static']
html_css_files = ['occo.css']
autodoc_member_order = 'bysource'
autodoc_default_options = {'show-inheritance': True}
nitpicky = True

# -- intersphinx, offline ---------------------------------------------------
_ONLINE = os.environ.get('OCCO_DOCS_ONLINE') == '1'
_INVENTORIES = {
    'python': ('https://docs.python.org/3', [
        os.path.join(HERE, '_inventories', 'python3.11.inv'),
        '/usr/share/doc/python3.11/html/objects.inv',
        '/usr/share/doc/python3/html/objects.inv',
    ]),
    'pika': ('https://pika.readthedocs.io/en/stable', [
        os.path.join(HERE, '_inventories', 'pika.inv'),
    ]),
}


def _inventory(url, candidates):
    for path in candidates:
        if os.path.isfile(path):
            return (url, path)
    return (url, None) if _ONLINE else None


intersphinx_mapping = {
    name: mapping for name, mapping in (
        (name, _inventory(url, paths))
        for name, (url, paths) in _INVENTORIES.items())
    if mapping is not None}
intersphinx_timeout = 10

# References that need an inventory we do not have. Each is ignored only
# while that inventory is missing, so a build with it checks them again.
nitpick_ignore = []
nitpick_ignore_regex = []
if 'pika' not in intersphinx_mapping:
    # pika's documentation is not available offline: no pika name can link.
    nitpick_ignore_regex += [(r'py:.*', r'pika(\..*)?')]
if 'python' not in intersphinx_mapping:
    # Without the Python inventory (docs/_inventories/ removed), references
    # to the standard library cannot resolve: check only our own names.
    nitpick_ignore_regex += [(r'py:.*', r'(?!occo\.).*')]

# PyYAML publishes no Sphinx inventory: its classes cannot be linked.
nitpick_ignore += [
    ('py:class', 'yaml.SafeLoader'),
    ('py:class', 'yaml.cyaml.CSafeLoader'),
    ('py:class', 'yaml.nodes.ScalarNode'),
]
# threading.Lock is documented as a factory; annotations name its type.
nitpick_ignore += [('py:class', '_thread.allocate_lock')]

# Private helpers named in type annotations (``comm._Role``, a module's
# ``_T`` type variable): they are not part of the documented API, so they
# have no page to link to.
nitpick_ignore_regex += [(r'py:class', r'occo\.(\w+\.)*_\w+')]


# -- autodoc hooks ------------------------------------------------------------
#: The signatures of the three roles. Their ``__new__`` picks the backend
#: class from ``protocol`` and takes ``(*args, **kwargs)``, which hides the
#: real parameters from introspection, so they are given here by hand.
_ROLE_SIGNATURES = {
    'occo.util.communication.comm.AsynchronProducer': '(*, protocol, **config)',
    'occo.util.communication.comm.RPCProducer': '(*, protocol, **config)',
    'occo.util.communication.comm.EventDrivenConsumer':
        '(processor, pargs=(), pkwargs=None, cancel_event=None, *, protocol, '
        '**config)',
}


def _role_signature(app, what, name, obj, options, signature,
                    return_annotation):
    """Show a role's real parameters (see :data:`_ROLE_SIGNATURES`)."""
    if what == 'class' and name in _ROLE_SIGNATURES:
        return _ROLE_SIGNATURES[name], None
    return None


def _public_bases(app, name, obj, options, bases):
    """Show public classes as bases: a private base (``_Role``) is replaced
    by its own bases, so no link points at an undocumented class."""
    def expand(base):
        if not base.__name__.startswith('_'):
            return [base]
        return [b for parent in base.__bases__ for b in expand(parent)]
    public = []
    for base in bases:
        for b in expand(base):
            if b not in public:
                public.append(b)
    if len(public) > 1 and object in public:
        public.remove(object)
    bases[:] = public


def _widen_simple_tables(app, what, name, obj, options, lines):
    """Widen a column of a reST simple table whose text overflows it.

    docutils rejects such a table ("Malformed table"). This keeps the build
    going while the docstring is being fixed; it changes nothing in a table
    that is well formed.
    """
    border = re.compile(r'^ *=+( +=+)+ *$')
    i = 0
    while i < len(lines):
        if not border.match(lines[i]):
            i += 1
            continue
        end = i + 1
        while end < len(lines) and lines[end].strip():
            end += 1
        _widen(lines, i, end)
        i = end


def _widen(lines, start, end):
    column = 0
    while True:
        spans = [m.span() for m in re.finditer(r'=+', lines[start])]
        if column >= len(spans) - 1:
            return
        edge = spans[column][1]
        rows = range(start, end)
        overflow = max(
            (len(re.match(r'\S*', lines[r][edge:]).group()) for r in rows
             if not re.fullmatch(r' *=[ =]*', lines[r])), default=0)
        for r in rows:
            line = lines[r]
            if overflow and (len(line) <= edge or line[edge] == ' '
                             or line[edge] == '='):
                fill = '=' if line[edge - 1:edge] == '=' else ' '
                lines[r] = line[:edge] + fill * overflow + line[edge:]
        column += 1


def _resolve_as_python_does(app, env, node, contnode):
    """Resolve an unqualified Python reference through the namespace of
    the module whose docstring holds it: ``CommunicationError`` in a module
    that imported it links to where it is documented."""
    if node.get('refdomain') != 'py' or not node.get('py:module'):
        return None
    module = sys.modules.get(node['py:module'])
    obj = module
    for part in node['reftarget'].split('.'):
        obj = getattr(obj, part, None)
    name = '{}.{}'.format(getattr(obj, '__module__', ''),
                          getattr(obj, '__qualname__', ''))
    if obj is None or name in ('.', node['reftarget']):
        return None
    return env.domains['py'].resolve_xref(
        env, node['refdoc'], app.builder, node['reftype'], name, node,
        contnode)


class ExportedNames(SphinxDirective):
    """``.. exported-names:: package``: what ``package.__all__`` exports.

    One line per module that defines some of the names, each name linked to
    where it is documented. The list follows ``__all__``, so the facade's
    page cannot fall behind what ``import`` gives.
    """

    required_arguments = 1

    def run(self):
        package = importlib.import_module(self.arguments[0])
        by_module = {}
        for name in package.__all__:
            obj = getattr(package, name)
            by_module.setdefault(obj.__module__, []).append(
                ':py:obj:`~{}.{}`'.format(obj.__module__, obj.__qualname__))
        lines = ['* from :mod:`{}`: {}'.format(module, ', '.join(names))
                 for module, names in by_module.items()]
        container = nodes.container()
        self.state.nested_parse(StringList(lines, self.get_source_info()[0]),
                                self.content_offset, container)
        return container.children


def setup(app):
    app.add_directive('exported-names', ExportedNames)
    app.connect('autodoc-process-bases', _public_bases)
    app.connect('autodoc-process-signature', _role_signature)
    app.connect('missing-reference', _resolve_as_python_does)
    app.connect('autodoc-process-docstring', _widen_simple_tables)
