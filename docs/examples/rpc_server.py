# SPDX-License-Identifier: Apache-2.0
"""Answer the RPC requests of the queue of config.yaml until Ctrl-C."""

import os

import occo.util.communication as comm
from occo.util.config import DefaultYAMLConfig

HERE = os.path.dirname(os.path.abspath(__file__))


def process(message):
    """Return the text in capitals."""
    if not isinstance(message, str):
        # A chosen status: the caller gets a CriticalError (400).
        return comm.Response(400, 'expected text, got {}'.format(
            type(message).__name__))
    if not message:
        # Any exception: the caller gets an ApplicationError.
        raise ValueError('empty message')
    return message.upper()


with open(os.path.join(HERE, 'config.yaml')) as f:
    cfg = DefaultYAMLConfig(f)

with comm.EventDrivenConsumer(process, **cfg.mqconfig) as server:
    print('serving; press Ctrl-C to stop')
    server.start_consuming()
print('stopped')
