# SPDX-License-Identifier: Apache-2.0
"""Fixtures of the fault-injection suite: a RabbitMQ node of its own.

Destructive tests kill connections and restart a broker, so they run on a
node this suite starts (own node name, ports and data directory under a
temporary directory) and always stops; the shared broker is not disturbed.
"""

import pytest

from support.rabbitnode import RabbitNode


@pytest.fixture(scope='session')
def node():
    """A RabbitMQ node of the suite's own, running for the whole session."""
    with RabbitNode(name='occofault') as rabbit:
        yield rabbit
