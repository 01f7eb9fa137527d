# SPDX-License-Identifier: Apache-2.0
"""Call the RPC server once: ``rpc_producer.py [MESSAGE]``.

Without a running ``rpc_server.py`` it reports a timeout after 5 seconds.
"""

import os

import occo.util.communication as comm
from occo.util.communication import ApplicationError, CommunicationError
from occo.util.config import DefaultYAMLConfig

HERE = os.path.dirname(os.path.abspath(__file__))

with open(os.path.join(HERE, 'config.yaml')) as f:
    cfg = DefaultYAMLConfig(f)
cfg.add_argument('message', nargs='?', default='test message')
cfg.parse_args()

with comm.RPCProducer(rpc_timeout=5, **cfg.mqconfig) as rpc:
    try:
        retval = rpc.push_message(cfg.message)
    except CommunicationError as e:
        print('communication failed:', e)      # includes RPCTimeoutError
    except ApplicationError as e:                # the processor raised
        print('the server failed: {}: {}'.format(e.remote_type,
                                                 e.remote_message))
    else:
        print('result:', retval)
