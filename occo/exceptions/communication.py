# SPDX-License-Identifier: Apache-2.0
"""The original's ``occo.exceptions.communication``: the transport errors,
as defined in :mod:`occo.util.exceptions`."""

from ..util.exceptions import CommunicationError, CriticalError, TransientError

__all__ = ['CommunicationError', 'TransientError', 'CriticalError']
