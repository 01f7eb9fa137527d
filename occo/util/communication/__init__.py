# SPDX-License-Identifier: Apache-2.0
"""Component communication in OCCO.

Three roles, each a context manager around its connection::

    import occo.util.communication as comm

    with comm.AsynchronProducer(**cfg.mqconfig) as prod:
        prod.push_message('test message')

    with comm.RPCProducer(**cfg.mqconfig) as rpc:
        result = rpc.push_message('test message')

    with comm.EventDrivenConsumer(core_func, **cfg.mqconfig) as cons:
        cons.start_consuming()

The ``protocol`` key selects the backend: ``amqp`` (RabbitMQ, :mod:`.mq`)
or ``memory`` (in-process, :mod:`.memory`). Importing this package registers
both. Objects of an application's own classes travel once their class is
registered on both sides with :func:`register_type`
(:mod:`.message_types`).
"""

__version__ = '1.0.0'

from ..exceptions import (ApplicationError, ClosedError, CommunicationError,
                          ConfigurationError, CriticalError, MessageDecodeError,
                          MissingConfigurationError, OccoError,
                          RPCTimeoutError, TransientError)
from .comm import (AsynchronProducer, EventDrivenConsumer, ExceptionResponse,
                   Response, RPCProducer, backends, has_backend, register)
from .message_context import MessageInfo, current_message
from .message_types import register_type, unregister_type
from . import memory, mq  # noqa: F401  (importing registers the backends)

__all__ = [
    'AsynchronProducer', 'RPCProducer', 'EventDrivenConsumer', 'register',
    'has_backend', 'backends', 'Response', 'ExceptionResponse',
    'register_type', 'unregister_type', 'current_message', 'MessageInfo',
    'OccoError', 'ConfigurationError', 'MissingConfigurationError',
    'CommunicationError', 'TransientError', 'CriticalError',
    'RPCTimeoutError', 'ApplicationError', 'ClosedError',
    'MessageDecodeError',
]
