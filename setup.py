# SPDX-License-Identifier: Apache-2.0
"""Packaging of occo.util.communication (``pip install .``)."""

import pathlib
import re

from setuptools import find_namespace_packages, setup

HERE = pathlib.Path(__file__).parent
VERSION = re.search(r"^__version__ = '([^']+)'",
                    (HERE / 'occo/util/communication/__init__.py').read_text(),
                    re.M).group(1)

setup(
    name='occo-util-communication',
    version=VERSION,
    description='OCCO component communication: blocking producers, RPC and '
                'consumers over RabbitMQ (pika) or in memory',
    long_description=(HERE / 'README.rst').read_text(),
    long_description_content_type='text/x-rst',
    license='Apache-2.0',
    python_requires='>=3.9',
    packages=find_namespace_packages(include=['occo.*']),
    package_data={'occo.util.communication': ['py.typed']},
    install_requires=['pika>=1.3,<1.5', 'PyYAML>=5.1'],
    extras_require={
        'test': ['pytest>=7', 'pytest-timeout>=2', 'build',
                 'opentelemetry-sdk>=1.20',
                 'orjson>=3.9'],   # json_text is tested with it and without
        'docs': ['sphinx>=5'],
        'lint': ['mypy', 'ruff', 'types-PyYAML', 'types-pika-ts',
                 'opentelemetry-api>=1.20'],   # typed: mypy checks telemetry.py
        'otel': ['opentelemetry-api>=1.20'],
        # Writes JSON messages 2 to 90 times faster, byte for byte the same,
        # and reads those of 2 KB or more 1.7 to 4.5 times faster, the same values.
        'fast': ['orjson>=3.9'],
        # python -m benchmarks: the other clients it compares, and --plot.
        'bench': ['kombu>=5.3', 'aio-pika>=9', 'amqpstorm>=2.10',
                  'matplotlib>=3.7'],
    },
    entry_points={
        'console_scripts': [
            'occo-comm = occo.util.communication.__main__:main'],
        # The pytest plugin: its fixtures are opt-in (docs/testing.rst).
        'pytest11': [
            'occo_communication = occo.util.communication.testing'],
    },
    classifiers=[
        'Programming Language :: Python :: 3',
        'License :: OSI Approved :: Apache Software License',
        'Topic :: System :: Networking',
    ],
)
