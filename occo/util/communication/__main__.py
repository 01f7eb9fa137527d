# SPDX-License-Identifier: Apache-2.0
"""``python -m occo.util.communication``: the ``occo-comm`` command.

A thin entry point; the commands live in :mod:`occo.util.communication.cli`.
"""

import sys

from .cli import main

__all__ = ['main']

if __name__ == '__main__':
    sys.exit(main())
