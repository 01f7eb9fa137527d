# SPDX-License-Identifier: Apache-2.0
"""The errors raised by OCCO utilities, in one place.

Every error derives from :class:`OccoError`, so ``except OccoError`` catches
everything this package raises on purpose::

    OccoError
    ├── ConfigurationError            bad or missing configuration (at construction)
    │   └── MissingConfigurationError a required key is absent
    ├── CommunicationError            the transport failed (http_code, reason)
    │   ├── TransientError            5xx: a retry may work
    │   │   └── RPCTimeoutError       no reply in time (also a builtin TimeoutError)
    │   └── CriticalError             4xx: do not retry
    ├── ApplicationError              the remote processor raised (and, where
    │                                 safe, also the remote exception's class)
    ├── MessageDecodeError            a received body cannot be decoded safely
    └── ClosedError                   the object is used after ``close()``

:class:`ApplicationError` is deliberately *not* a :class:`CommunicationError`:
the message was delivered and processed, and the remote code failed. Callers
handle the two separately::

    try:
        data = rpc.push_message(msg)
    except CommunicationError:
        ...  # the transport failed; the request may or may not have run
    except ApplicationError as e:
        ...  # the remote processor raised e.remote_type: e.remote_message
             # (a KeyError raised remotely is caught by except KeyError too)
"""

from __future__ import annotations

from typing import Optional

__all__ = [
    'OccoError', 'ConfigurationError', 'MissingConfigurationError',
    'CommunicationError', 'TransientError', 'CriticalError',
    'RPCTimeoutError', 'ApplicationError', 'ClosedError', 'MessageDecodeError',
]


class OccoError(Exception):
    """Root of every error raised by OCCO utilities."""


class ConfigurationError(OccoError, ValueError):
    """The configuration is invalid.

    Raised when an object is constructed, never on the first send.
    """


class MissingConfigurationError(ConfigurationError, KeyError):
    """A required configuration key is missing.

    :param key: the name of the missing key.
    """

    def __init__(self, key: str, message: Optional[str] = None) -> None:
        super().__init__(key, message)
        #: The name of the missing key.
        self.key = key
        self.message = message or 'missing configuration key {!r}'.format(key)

    def __str__(self) -> str:
        return self.message


class CommunicationError(OccoError):
    """Delivery of a message, or of its reply, failed.

    :param http_code: an HTTP-like status: 4xx for errors a retry cannot fix,
        5xx for errors a retry may fix.
    :param reason: a human readable description; never contains a password.
        Usually a ``str``; the ``data`` of a remote
        :class:`~occo.util.communication.comm.Response` may be any message.
    """

    def __init__(self, http_code: int = 500, reason: object = None) -> None:
        super().__init__(http_code, reason)
        #: HTTP-like status code of the failure.
        self.http_code = http_code
        #: Human readable description of the failure.
        self.reason = reason

    def __str__(self) -> str:
        if self.reason is None:
            return 'communication error (code {})'.format(self.http_code)
        return '{} (code {})'.format(self.reason, self.http_code)


class TransientError(CommunicationError):
    """A communication failure that may go away if the call is repeated (5xx)."""

    def __init__(self, http_code: int = 503, reason: object = None) -> None:
        super().__init__(http_code, reason)


class CriticalError(CommunicationError):
    """A communication failure that repeating the call cannot fix (4xx)."""

    def __init__(self, http_code: int = 400, reason: object = None) -> None:
        super().__init__(http_code, reason)


class RPCTimeoutError(TransientError, TimeoutError):
    """No reply arrived within the RPC timeout.

    The request expires in the queue, so no consumer starts working on it
    after the caller stopped waiting; one that already started may finish.
    """

    def __init__(self, http_code: int = 504, reason: object = None) -> None:
        super().__init__(http_code, reason)


class ApplicationError(OccoError):
    """The remote processor raised an exception while handling the message.

    When the remote class is a builtin exception or a registered one, the
    caller gets an instance of that class that is also an
    :class:`ApplicationError` (see
    :mod:`~occo.util.communication.remote_errors`); else an
    :class:`ApplicationError` naming the remote type. Either way it carries:

    :param remote_type: the name of the remote exception's class.
    :param remote_message: ``str()`` of the remote exception.
    :param remote_traceback: the formatted remote traceback, or ``None``.
    :param http_code: the code of the remote
        :class:`~occo.util.communication.comm.ExceptionResponse`, 500 for an
        exception the processor raised.
    :param remote_module: the module of the remote exception's class.
    """

    def __init__(self, remote_type: str, remote_message: str,
                 remote_traceback: Optional[str] = None, http_code: int = 500,
                 remote_module: Optional[str] = None) -> None:
        super().__init__(remote_type, remote_message, remote_traceback)
        #: Class name of the remote exception, e.g. ``'ValueError'``.
        self.remote_type = remote_type
        #: Module of the remote exception's class, e.g. ``'builtins'``.
        self.remote_module = remote_module
        #: ``str()`` of the remote exception.
        self.remote_message = remote_message
        #: Formatted traceback text of the remote exception, if sent.
        self.remote_traceback = remote_traceback
        #: HTTP-like status the remote side gave the failure.
        self.http_code = http_code

    def __str__(self) -> str:
        if not self.remote_message:
            return self.remote_type
        return '{}: {}'.format(self.remote_type, self.remote_message)


class ClosedError(OccoError, RuntimeError):
    """The object was used after it was closed (its ``with`` block ended, or
    ``close()`` was called).

    A closed object cannot be reopened: create a new one.
    """


class MessageDecodeError(OccoError, ValueError):
    """A message body cannot be decoded safely.

    The consumer rejects such a message without requeueing it; an RPC caller
    gets a :class:`~occo.util.exceptions.CriticalError` (400).
    """
