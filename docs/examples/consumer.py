# SPDX-License-Identifier: Apache-2.0
"""Print each message of the queue of config.yaml until Ctrl-C."""

import os

import occo.util.communication as comm
from occo.util.config import DefaultYAMLConfig

HERE = os.path.dirname(os.path.abspath(__file__))


def process(message):
    print('received:', message)


with open(os.path.join(HERE, 'config.yaml')) as f:
    cfg = DefaultYAMLConfig(f)

with comm.EventDrivenConsumer(process, **cfg.mqconfig) as consumer:
    print('waiting for messages; press Ctrl-C to stop')
    consumer.start_consuming()   # returns on Ctrl-C
print('stopped')
