# SPDX-License-Identifier: Apache-2.0
"""The sdist and wheel install into a fresh venv and work there."""

import os
import pathlib
import subprocess
import sys
import venv

import pytest

import occo.util.communication as comm

ROOT = pathlib.Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def run(*args, **kwargs):
    return subprocess.run(args, check=True, capture_output=True, text=True,
                          timeout=300, **kwargs)


@pytest.fixture(scope='module')
def dists(tmp_path_factory):
    out = tmp_path_factory.mktemp('dist')
    run(sys.executable, '-m', 'build', '--sdist', '--wheel', '--outdir', str(out),
        str(ROOT))
    return {path.suffix if path.suffix == '.whl' else '.tar.gz': path
            for path in out.iterdir()}


@pytest.mark.parametrize('kind', ['.whl', '.tar.gz'])
def test_distribution_installs_and_runs_in_fresh_venv(dists, kind, tmp_path):
    venv.create(tmp_path / 'env', with_pip=True)
    python = str(tmp_path / 'env' / 'bin' / 'python')
    run(python, '-m', 'pip', 'install', '-q', '--disable-pip-version-check',
        str(dists[kind]))
    outside = {'cwd': str(tmp_path), 'env': {k: v for k, v in os.environ.items()
                                             if k != 'PYTHONPATH'}}
    version = run(str(tmp_path / 'env' / 'bin' / 'occo-comm'), '--version', **outside)
    assert version.stdout.split() == ['occo-comm', comm.__version__]
    demo = run(python, '-m', 'occo.util.communication', 'demo', **outside)
    assert 'demo finished: OK' in demo.stdout
    typed = run(python, '-c', 'import importlib.resources as r; '
                'print(r.files("occo.util.communication").joinpath("py.typed").is_file())',
                **outside)
    assert typed.stdout.strip() == 'True'
