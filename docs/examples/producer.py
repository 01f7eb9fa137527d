# SPDX-License-Identifier: Apache-2.0
"""Send one message to the queue of config.yaml: ``producer.py [MESSAGE]``."""

import os

import occo.util.communication as comm
from occo.util.config import DefaultYAMLConfig

HERE = os.path.dirname(os.path.abspath(__file__))

with open(os.path.join(HERE, 'config.yaml')) as f:
    cfg = DefaultYAMLConfig(f)
cfg.add_argument('message', nargs='?', default='test message')
cfg.parse_args()

with comm.AsynchronProducer(**cfg.mqconfig) as producer:
    producer.push_message(cfg.message)
# Leaving the block waited until the broker confirmed the message.
print('sent:', cfg.message)
