"""The child side: :func:`parent_port`, and the report of an uncaught exception.

The first call to :func:`parent_port` takes descriptor 3, reads the parent's ``HELLO``,
answers with its own, and installs ``sys.excepthook`` and ``threading.excepthook`` hooks
that send the exception's message and location to the parent in a ``PANIC`` frame before
Python prints the traceback as usual. The parent reports it as ``Error::Panicked`` if the
process then ends abnormally (an uncaught exception in the main thread exits with code 1).
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import traceback
from types import TracebackType

from . import wire
from .errors import ClosedError, NotAUtilityProcessError, ProtocolError
from .port import ParentPort
from .transport import Channel

PORT_FD = 3
ENV_PORT_FD = "UTILITY_PROCESS_PORT_FD"
ENV_SERVICE_NAME = "UTILITY_PROCESS_SERVICE_NAME"
ENV_PARENT_PID = "UTILITY_PROCESS_PARENT_PID"
#: How long :func:`parent_port` waits for the parent's ``HELLO`` (written before the child
#: starts, so normally there at once).
HELLO_TIMEOUT = 10.0

_lock = threading.Lock()
_parent: ParentPort | None = None


def parent_port() -> ParentPort:
    """The port to the parent, in a process started by ``utility_process::fork``.

    The first call connects; later calls return the same port. It also removes the
    ``UTILITY_PROCESS_*`` variables from the environment and marks descriptor 3
    close-on-exec, so that programs this child starts do not take themselves for utility
    processes.

    Raises :class:`NotAUtilityProcessError` when the program was not started by ``fork``
    (the variable or descriptor 3 is missing or not a Unix stream socket), or when the
    parent's ``HELLO`` is missing or wrong. A parent already gone is not an error: ``recv``
    then returns ``None``.
    """
    global _parent
    with _lock:
        if _parent is None:
            _parent = _connect()
        return _parent


def _connect() -> ParentPort:
    value = os.environ.get(ENV_PORT_FD)
    if value is None:
        raise NotAUtilityProcessError(
            f"not started by utility_process::fork: {ENV_PORT_FD} is not set"
        )
    if value != str(PORT_FD):
        raise NotAUtilityProcessError(f"{ENV_PORT_FD} is {value!r}, not '3'")
    try:
        os.fstat(PORT_FD)
    except OSError:
        raise NotAUtilityProcessError("descriptor 3 is not open") from None
    try:
        sock = socket.socket(fileno=PORT_FD)
    except OSError:
        raise NotAUtilityProcessError("descriptor 3 is not a socket") from None
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        sock.detach()
        raise NotAUtilityProcessError("descriptor 3 is not a Unix stream socket")
    os.set_inheritable(PORT_FD, False)
    service_name = os.environ.get(ENV_SERVICE_NAME, "")
    for key in (ENV_PORT_FD, ENV_SERVICE_NAME, ENV_PARENT_PID):
        os.environ.pop(key, None)

    channel = Channel(sock, wire.PRE_HELLO_MAX_FRAME_LEN, 0)
    try:
        hello = channel.read_hello(HELLO_TIMEOUT)
    except TimeoutError:
        channel.close()
        raise NotAUtilityProcessError("no HELLO from the parent on descriptor 3") from None
    except ClosedError:
        raise NotAUtilityProcessError("the parent closed the port before its HELLO") from None
    except ProtocolError as e:
        raise NotAUtilityProcessError(f"the parent's HELLO is invalid: {e}") from None
    channel.max_frame_len = hello.max_frame_len
    try:
        # Flags 0: a Python child cannot confirm a sandbox it did not apply itself.
        channel.send(wire.encode_hello(hello.max_frame_len, flags=0))
    except ClosedError:
        pass  # the parent is gone: recv will say so
    port = ParentPort(channel, service_name)
    _install_hooks(channel)
    return port


def _report(channel: Channel, exc: BaseException, tb: TracebackType | None) -> None:
    """Sends a ``PANIC`` report: the exception as Python's last traceback line prints it,
    and the innermost frame of the traceback (where it was raised)."""
    try:
        message = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        file, line, column = "<unknown>", 0, 0
        frames = traceback.extract_tb(tb) if tb is not None else []
        if frames:
            last = frames[-1]
            file, line = last.filename, last.lineno or 0
            colno = getattr(last, "colno", None)
            column = colno + 1 if colno is not None else 0  # 1-based, as Rust's
        frame = wire.encode_panic(
            message, file, line, column, threading.current_thread().name, channel.max_frame_len
        )
        channel.send(frame)
    except Exception:
        pass  # the report is best effort; the exit is reported anyway


def _install_hooks(channel: Channel) -> None:
    previous = sys.excepthook

    def excepthook(
        kind: type[BaseException], exc: BaseException, tb: TracebackType | None
    ) -> None:
        if not isinstance(exc, KeyboardInterrupt):
            _report(channel, exc, tb)
        previous(kind, exc, tb)

    sys.excepthook = excepthook
    previous_thread_hook = threading.excepthook

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is not None and not isinstance(args.exc_value, SystemExit):
            _report(channel, args.exc_value, args.exc_traceback)
        previous_thread_hook(args)

    threading.excepthook = thread_hook
