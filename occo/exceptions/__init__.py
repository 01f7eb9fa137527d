# SPDX-License-Identifier: Apache-2.0
"""Where the original OCCO code imported its errors from.

``from occo.exceptions import ConfigurationError`` and ``from
occo.exceptions.communication import CommunicationError`` keep working: the
names are those of :mod:`occo.util.exceptions`, the one place the errors are
defined. New code imports from there. The original's other modules here
(``orchestration``, ``infobroker``, ``api``) held the errors of OCCO
components this package does not re-create.
"""

from ..util.exceptions import *  # noqa: F403
from ..util.exceptions import __all__  # noqa: F401
