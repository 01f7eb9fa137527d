# SPDX-License-Identifier: Apache-2.0
"""The original OCCO configuration tests (occopus/util,
occo_test/config_test.py of the era that had ``!yaml_import`` and
``!text_import``), ported to Python 3 with their assertions kept.

What changed in the port: ``print`` became a function, the data files are
``tests/data/legacy_config`` (the same shapes), and
``assertDictContainsSubset`` (gone in Python 3.12) became the subset test it
made. The tests that called ``yaml.load`` with the tags added to PyYAML's
global loaders, or ``util.config.config()`` (which configured logging), are
left out: this library refuses the first and does not offer the second (see
docs/migrating.rst).
"""

import os
import unittest

import occo.util as util
import occo.util.config as cfg

DATA = os.path.join(os.path.dirname(__file__), 'data', 'legacy_config')


class ConfigTest(unittest.TestCase):
    def setUp(self):
        self.filename = util.rel_to_file('data/legacy_config/test_config.yaml')
        self.ethalon = dict(
            setting_1=1,
            setting_2=2,
            complex_setting=dict(cs_1=3, cs_2=4, cs_3=5),
            list_setting=['a', 'b', 'c']
        )
        self.args = cfg.DefaultYAMLConfig(self.filename)

    def test_load(self):
        self.args.parse_args('')
        self.assertLessEqual(self.ethalon.items(), self.args.__dict__.items())

    def test_override(self):
        testargs = '--setting_2=ttt -s1 55'.split()  # noqa: SIM905 (the original's line)
        self.args.add_argument('--setting_1', '-s1', type=int)
        self.args.add_argument('--setting_2', '-s2')
        self.args.parse_args(testargs)
        self.assertEqual(self.args.setting_1, 55)
        self.assertEqual(self.args.setting_2, 'ttt')

    def test_import(self):
        self.filename = os.path.join(DATA, 'import_test/parent.yaml')
        self.control_filename = os.path.join(DATA, 'import_test/control.yaml')
        data = cfg.yaml_load_file(self.filename)
        print('%r' % data)
        self.assertIn('child1', data)
        child1 = data['child1']
        self.assertIs(type(child1), dict)
        self.assertIn('child2', child1)
        child2 = child1['child2']
        self.assertIs(type(child2), dict)
        self.assertIn('dataaa', child2)
        self.assertEqual(child2['dataaa'], 'this is it')
        control = cfg.yaml_load_file(self.control_filename)
        self.assertEqual(data, control)

    def test_import_text(self):
        self.filename = os.path.join(DATA, 'import_test/parent_text.yaml')
        self.control_filename = os.path.join(DATA, 'import_test/control_text.yaml')
        data = cfg.yaml_load_file(self.filename)
        control = cfg.yaml_load_file(self.control_filename)
        self.assertEqual(data, control)

    def test_cfg_repr(self):
        # No functional test; only for coverage
        repr(self.args)
        str(self.args)
