# SPDX-License-Identifier: Apache-2.0
"""Tests of the names the original components imported from ``occo.util``,
used as the era's tests used them."""

import os
import pathlib
import subprocess
import sys

import pytest

import occo.util as util
import occo.util.config as config
import occo.util.exceptions as exceptions

HERE = pathlib.Path(__file__).resolve().parent
LEGACY = HERE / 'data' / 'legacy_config'


@pytest.mark.parametrize('name', exceptions.__all__)
def test_every_error_is_importable_from_occo_util(name):
    assert getattr(util, name) is getattr(exceptions, name)
    assert name in util.__all__


def test_occo_util_imports_neither_pika_nor_communication():
    code = ("import sys; sys.modules['pika'] = None\n"  # importing pika fails
            "import occo.util, occo.util.config\n"
            "print(sorted(m for m in sys.modules if m.startswith('occo.util.comm')))")
    result = subprocess.run([sys.executable, '-c', code], capture_output=True,
                            text=True, timeout=60, cwd=HERE.parent)

    assert result.returncode == 0, result.stderr
    assert result.stdout == '[]\n'


def test_configuration_error_as_the_original_factory_raised_it():
    with pytest.raises(util.ConfigurationError) as excinfo:
        raise util.ConfigurationError('protocol', 'Missing protocol specification')

    assert excinfo.value.args == ('protocol', 'Missing protocol specification')
    assert isinstance(excinfo.value, (util.OccoError, ValueError))


def test_rel_to_file_is_relative_to_the_calling_module():
    assert util.rel_to_file('data/legacy_config/test_config.yaml') == str(
        LEGACY / 'test_config.yaml')


def test_rel_to_file_with_basefile():
    basefile = LEGACY / 'import_test' / 'parent.yaml'

    assert util.rel_to_file('../test_config.yaml', basefile=basefile) == str(
        LEGACY / 'test_config.yaml')
    assert util.rel_to_file('c1.yaml', str(basefile)) == str(
        LEGACY / 'import_test' / 'c1.yaml')


def test_rel_to_file_keeps_an_absolute_path(tmp_path):
    assert util.rel_to_file(str(tmp_path / 'x.yaml')) == str(tmp_path / 'x.yaml')


def test_rel_to_file_d_stack_frame_resolves_for_the_caller_of_a_helper():
    # A helper in another module (its globals name component/helper.py):
    # with d_stack_frame=1 it resolves against its caller, this file.
    namespace = {'__file__': str(LEGACY / 'component' / 'helper.py'), 'util': util}
    exec('def locate(name, frame):\n'
         '    return util.rel_to_file(name, d_stack_frame=frame)\n', namespace)
    locate = namespace['locate']

    assert locate('x.yaml', 1) == str(HERE / 'x.yaml')
    assert locate('x.yaml', 0) == str(LEGACY / 'component' / 'x.yaml')


def test_rel_to_file_relative_to_current_directory(monkeypatch):
    monkeypatch.chdir(LEGACY)

    assert util.rel_to_file('data/legacy_config/import_test/c1.yaml',
                            relative_cwd=True) == os.path.join('import_test', 'c1.yaml')


def test_rel_to_file_without_a_calling_file_asks_for_basefile():
    namespace = {'util': util}

    with pytest.raises(ValueError, match='pass basefile'):
        exec('util.rel_to_file("x.yaml")', namespace)


def test_path_coalesce_returns_first_existing_path(tmp_path):
    (tmp_path / 'second.yaml').write_text('')

    found = util.path_coalesce(None, '', str(tmp_path / 'first.yaml'),
                               tmp_path / 'second.yaml', str(LEGACY / 'test_config.yaml'))

    assert found == str(tmp_path / 'second.yaml')
    assert util.path_coalesce(str(tmp_path / 'none.yaml'), None) is None


def test_default_yaml_config_of_rel_to_file_as_the_era_tests_wrote_it():
    cfg = config.DefaultYAMLConfig(util.rel_to_file('data/legacy_config/test_config.yaml'))
    cfg.add_argument('--setting_1', '-s1', type=int)
    cfg.add_argument('--setting_2', '-s2')

    cfg.parse_args(['--setting_2=ttt', '-s1', '55'])

    assert cfg.as_dict() == {
        'setting_1': 55, 'setting_2': 'ttt',
        'complex_setting': {'cs_1': 3, 'cs_2': 4, 'cs_3': 5},
        'list_setting': ['a', 'b', 'c']}


def test_yaml_load_file_of_rel_to_file_as_the_era_tests_wrote_it():
    data = config.yaml_load_file(
        util.rel_to_file('data/legacy_config/import_test/parent.yaml'))
    control = config.yaml_load_file(
        util.rel_to_file('data/legacy_config/import_test/control.yaml'))

    assert data == control
