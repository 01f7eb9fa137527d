# SPDX-License-Identifier: Apache-2.0
"""Where one RPC call's outcome is left for the thread that waits for it.

Both backends use :class:`ReplySlot`: the caller creates one per call and
waits on it; whoever learns the outcome first (the reply, a returned
request, a lost connection, ``close()``) settles it, and later settlers are
ignored, so a slot is settled exactly once whichever threads race for it.
"""

from __future__ import annotations

import threading
from typing import Optional

from ..exceptions import CommunicationError

__all__ = ['ReplySlot']


class ReplySlot:
    """One RPC call's reply body or error; settled once, first wins.

    :param owner: what the request went out on (the AMQP loop), so that the
        death of that connection fails exactly the calls it carried.
    """

    __slots__ = ('owner', 'body', 'error', '_settling', '_arrived', '_settled')

    def __init__(self, owner: object = None) -> None:
        self.owner = owner
        #: The reply body, once settled with one.
        self.body: Optional[bytes] = None
        #: The error, once settled with one.
        self.error: Optional[CommunicationError] = None
        #: Makes settling atomic: held for the two lines that settle.
        self._settling = threading.Lock()
        #: Released once settled (a lock is the cheapest thing to wait on).
        self._arrived = threading.Lock()
        self._arrived.acquire()
        self._settled = False   # _settling

    def settle(self, body: Optional[bytes] = None,
               error: Optional[CommunicationError] = None) -> bool:
        """Leave the outcome, unless one was left already.

        :returns: ``True`` if this call settled the slot.
        """
        with self._settling:
            if self._settled:
                return False
            self._settled = True
            self.body, self.error = body, error
        self._arrived.release()
        return True

    def is_set(self) -> bool:
        """Whether the slot is settled (never blocks)."""
        return self._settled

    def wait(self, timeout: Optional[float]) -> bool:
        """Wait until settled; ``False`` if ``timeout`` seconds passed first."""
        if self._arrived.acquire(timeout=-1 if timeout is None else timeout):
            self._arrived.release()   # later waits return at once
            return True
        return False
