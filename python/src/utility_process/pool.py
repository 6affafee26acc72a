"""The worker side of ``utility_process_pool::Pool``: :func:`serve` and :func:`serve_async`.

The pool speaks its own small protocol in raw-byte messages over the parent port
(``crates/pool/src/frame.rs``): one kind byte, a little-endian ``u64`` task id, a body.

====  =====================  =========  ======================================
kind  name                   direction  body
====  =====================  =========  ======================================
0x01  task                   in         the request, MessagePack
0x02  cancel                 in         empty
0x10  ready                  out        ``b"utility-process-pool/1"`` (id 0)
0x11  init failed            out        the initializer's error, UTF-8 (id 0)
0x12  reply                  out        the reply, MessagePack
0x13  failed                 out        the handler's error, UTF-8
0x14  cancelled              out        empty
0x15  bad request            out        why the request did not decode, UTF-8
====  =====================  =========  ======================================

A worker answers each task it is given exactly once (0x12 to 0x15). A handler that raises
answers ``failed`` with the exception's text (the pool's ``TaskError::Failed``); one that
raises :class:`Cancelled` answers ``cancelled``. A worker process that dies mid-task (a
crash, ``os._exit``) fails that task with ``TaskError::WorkerCrashed`` and the pool replaces
it.
"""

from __future__ import annotations

import asyncio
import inspect
import queue
import struct
import threading
import traceback
from typing import Any, Awaitable, Callable

from . import msgpack
from .child import parent_port
from .errors import DecodeError, UtilityProcessError
from .port import ParentPort

PROTOCOL = b"utility-process-pool/1"
TASK, CANCEL = 0x01, 0x02
READY, INIT_FAILED, REPLY, FAILED, CANCELLED, BAD_REQUEST = 0x10, 0x11, 0x12, 0x13, 0x14, 0x15
#: The most bytes of an error text sent to the pool (longer ones are cut, with "…").
TEXT_MAX = 4096

_HEADER = struct.Struct("<BQ")


class Cancelled(Exception):
    """Raise it from a handler that stopped because its task was cancelled: the pool hears
    ``cancelled`` rather than a failure."""


class InitError(UtilityProcessError):
    """The initializer given to :func:`serve` raised; the pool has been told why."""


class TaskContext:
    """What a handler learns about its task: its id and whether the pool cancelled it."""

    def __init__(self, task_id: int) -> None:
        self.id = task_id
        self._cancelled = threading.Event()

    @property
    def cancelled(self) -> bool:
        """Whether the pool has cancelled the task (a cancellation or a deadline). A handler
        that computes should look now and then and raise :class:`Cancelled`."""
        return self._cancelled.is_set()

    def cancel(self) -> None:
        """Marks the task cancelled (done by the reader when the pool says so)."""
        self._cancelled.set()

    def __repr__(self) -> str:
        return f"TaskContext(id={self.id}, cancelled={self.cancelled})"


def parse(data: bytes) -> tuple[int, int, bytes] | None:
    """Kind, task id and body of a pool message; ``None`` when it is not one."""
    if len(data) < _HEADER.size or data[0] not in (TASK, CANCEL):
        return None
    kind, task_id = _HEADER.unpack_from(data)
    return kind, task_id, data[_HEADER.size :]


def _text(text: str) -> bytes:
    raw = text.encode("utf-8", "replace")
    if len(raw) <= TEXT_MAX:
        return raw
    return raw[:TEXT_MAX].decode("utf-8", "ignore").encode("utf-8") + "…".encode("utf-8")


def _post(port: ParentPort, kind: int, task_id: int, body: bytes = b"") -> None:
    try:
        port.post_bytes(_HEADER.pack(kind, task_id) + body)
    except UtilityProcessError:
        pass  # the parent is gone, or too large (answered below)


def _describe(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


def _answer(port: ParentPort, task_id: int, outcome: Callable[[], Any]) -> None:
    """Runs ``outcome`` and posts the task's one answer."""
    try:
        reply = outcome()
    except Cancelled:
        _post(port, CANCELLED, task_id)
        return
    except Exception as e:
        _post(port, FAILED, task_id, _text(_describe(e)))
        return
    _post_reply(port, task_id, reply)


def _post_reply(port: ParentPort, task_id: int, reply: Any) -> None:
    try:
        body = msgpack.packb(reply)
    except UtilityProcessError as e:
        _post(port, FAILED, task_id, _text(f"cannot encode the reply: {e}"))
        return
    try:
        port.post_bytes(_HEADER.pack(REPLY, task_id) + body)
    except UtilityProcessError as e:
        _post(port, FAILED, task_id, _text(f"cannot post the reply: {e}"))


def _takes_context(handler: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(handler).parameters.values()
    except (TypeError, ValueError):
        return True
    positional = [
        p for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    return len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in positional)


def _start(port: ParentPort | None, init: Callable[[], Any] | None) -> ParentPort:
    port = port if port is not None else parent_port()
    if init is not None:
        try:
            init()
        except Exception as e:
            _post(port, INIT_FAILED, 0, _text(_describe(e)))
            raise InitError(f"the worker's initializer failed: {_describe(e)}") from e
    port.post_bytes(_HEADER.pack(READY, 0) + PROTOCOL)
    return port


def serve(
    handler: Callable[..., Any],
    *,
    init: Callable[[], Any] | None = None,
    port: ParentPort | None = None,
) -> None:
    """Serves the pool until the parent goes away: ``handler(request)`` or
    ``handler(request, ctx)`` runs on this thread, one task at a time, while a reader thread
    takes tasks and cancellations from the port.

    ``init`` runs first; if it raises, the pool is told why (``StartError::Init``) and
    :class:`InitError` is raised. A task cancelled before it starts is answered
    ``cancelled`` without running.
    """
    port = _start(port, init)
    with_context = _takes_context(handler)
    tasks: queue.SimpleQueue[tuple[int, bytes, TaskContext] | None] = queue.SimpleQueue()
    contexts: dict[int, TaskContext] = {}
    lock = threading.Lock()

    def read() -> None:
        try:
            for message in port:
                parsed = parse(message.bytes)
                if parsed is None:
                    continue
                kind, task_id, body = parsed
                with lock:
                    if kind == TASK:
                        ctx = TaskContext(task_id)
                        contexts[task_id] = ctx
                        tasks.put((task_id, body, ctx))
                    elif task_id in contexts:
                        contexts[task_id].cancel()
        finally:
            tasks.put(None)

    reader = threading.Thread(target=read, name="pool-reader", daemon=True)
    reader.start()
    while (item := tasks.get()) is not None:
        task_id, body, ctx = item
        try:
            if ctx.cancelled:
                _post(port, CANCELLED, task_id)
                continue
            try:
                request = msgpack.unpackb(body)
            except DecodeError as e:
                _post(port, BAD_REQUEST, task_id, _text(str(e)))
                continue
            args = (request, ctx) if with_context else (request,)
            _answer(port, task_id, lambda: handler(*args))
        finally:
            with lock:
                contexts.pop(task_id, None)


async def serve_async(
    handler: Callable[..., Awaitable[Any]],
    *,
    init: Callable[[], Any] | None = None,
    port: ParentPort | None = None,
) -> None:
    """:func:`serve` on the running asyncio loop: each task runs as an asyncio task, as many
    at once as the pool sends. A cancelled task's asyncio task is cancelled (the handler sees
    ``CancelledError`` at its next ``await``) and answered ``cancelled``. Returns when the
    parent goes away, cancelling what still runs."""
    port = _start(port, init)
    with_context = _takes_context(handler)
    running: dict[int, tuple[asyncio.Task[Any], TaskContext]] = {}

    async def run(task_id: int, request: Any, ctx: TaskContext) -> None:
        try:
            args = (request, ctx) if with_context else (request,)
            reply = await handler(*args)
        except (asyncio.CancelledError, Cancelled):
            if ctx.cancelled:
                _post(port, CANCELLED, task_id)
                return
            raise
        except Exception as e:
            _post(port, FAILED, task_id, _text(_describe(e)))
            return
        finally:
            running.pop(task_id, None)
        _post_reply(port, task_id, reply)

    try:
        async for message in port:
            parsed = parse(message.bytes)
            if parsed is None:
                continue
            kind, task_id, body = parsed
            if kind == CANCEL:
                if task_id in running:
                    task, ctx = running[task_id]
                    ctx.cancel()
                    task.cancel()
                continue
            try:
                request = msgpack.unpackb(body)
            except DecodeError as e:
                _post(port, BAD_REQUEST, task_id, _text(str(e)))
                continue
            ctx = TaskContext(task_id)
            running[task_id] = (asyncio.create_task(run(task_id, request, ctx)), ctx)
    finally:
        for task, _ in list(running.values()):
            task.cancel()
