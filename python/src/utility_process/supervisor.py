"""The child side of ``utility_process_supervisor``: :func:`attach` first, then
:meth:`Supervised.ready`.

The supervisor's first message on the parent port is ``{"magic":
"utility-process-supervisor", "version": 1, "restarts": n}`` carrying one port: the control
channel. Everything of supervision travels there (``crates/supervisor/src/protocol.rs``):

- child → supervisor: ``{"Attached": {"answers": bool}}``, ``"Ready"``, ``"Alive"``,
  ``{"Pong": n}``, ``{"Probe": [n, {"Ok": None}]}`` or ``{"Probe": [n, {"Err": words}]}``;
- supervisor → child: ``{"Ping": n}``, ``{"Probe": n}``.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Callable

from .child import parent_port
from .errors import ClosedError, DecodeError, UtilityProcessError
from .port import Message, MessagePort, ParentPort

MAGIC = "utility-process-supervisor"
VERSION = 1

Probe = Callable[[], Any]


class NotSupervisedError(UtilityProcessError):
    """The parent's first message is not a supervisor's (or one of another version). The
    message is in :attr:`first`; nothing else was read."""

    def __init__(self, first: Message, version: int | None) -> None:
        what = "not the supervisor's" if version is None else f"from a supervisor of version {version}"
        super().__init__(f"the parent's first message is {what}")
        self.first = first
        self.version = version


class Supervised:
    """A supervised child's link to its supervisor."""

    def __init__(self, control: MessagePort, restarts: int) -> None:
        self.control = control
        #: How many times the supervisor restarted this service before this start.
        self.restarts = restarts

    def ready(self) -> None:
        """Tells the supervisor the child has started: heartbeats and probes begin."""
        self.control.post_message("Ready")

    def alive(self) -> None:
        """A sign of life from the child's own loop (needed with :func:`attach_blocking`)."""
        self.control.post_message("Alive")


def _take_control(first: Message | None) -> tuple[MessagePort, int]:
    if first is None:
        raise ClosedError("the parent closed the port before its first message")
    try:
        hello = first.data
    except DecodeError:
        hello = None
    if not isinstance(hello, dict) or hello.get("magic") != MAGIC:
        raise NotSupervisedError(first, None)
    version = hello.get("version")
    if version != VERSION or len(first.ports) != 1:
        raise NotSupervisedError(first, version if isinstance(version, int) else None)
    restarts = hello.get("restarts", 0)
    return first.ports.pop(), restarts if isinstance(restarts, int) else 0


def _reply(request: Any, probe: Probe | None) -> Any:
    """The answer to one request, or ``None`` for one this side does not know."""
    if not isinstance(request, dict) or len(request) != 1:
        return None
    (name, n), = request.items()
    if name == "Ping":
        return {"Pong": n}
    if name == "Probe":
        verdict: dict[str, Any] = {"Ok": None}
        if probe is not None:
            try:
                if probe() is False:
                    verdict = {"Err": "the health probe failed"}
            except Exception as e:
                verdict = {"Err": str(e) or type(e).__name__}
        return {"Probe": [n, verdict]}
    return None


def _answer_forever(control: MessagePort, probe: Probe | None) -> None:
    try:
        for message in control:
            try:
                reply = _reply(message.data, probe)
            except DecodeError:
                continue
            if reply is not None:
                control.post_message(reply)
    except UtilityProcessError:
        pass


def attach(port: ParentPort | None = None, probe: Probe | None = None) -> Supervised:
    """Takes the supervisor's control channel (the first message on the parent port) and
    answers its heartbeats and probes from a background thread. Call it first.

    A heartbeat answer then proves the process is alive and its interpreter runs threads; it
    does not prove the main loop turns (use :func:`attach_async` or :func:`attach_blocking`
    for that). ``probe`` is called for each health probe: raising (or returning ``False``)
    makes it fail, with the exception's text.

    Raises :class:`NotSupervisedError` or :class:`ClosedError`.
    """
    port = port if port is not None else parent_port()
    control, restarts = _take_control(port.recv())
    control.post_message({"Attached": {"answers": True}})
    threading.Thread(
        target=_answer_forever, args=(control, probe), name="supervisor-heartbeat", daemon=True
    ).start()
    return Supervised(control, restarts)


async def attach_async(port: ParentPort | None = None, probe: Probe | None = None) -> Supervised:
    """:func:`attach` for asyncio: heartbeats are answered by a task on the running loop, so
    an answer proves the loop is not blocked."""
    port = port if port is not None else parent_port()
    control, restarts = _take_control(await port.recv_async())
    control.post_message({"Attached": {"answers": True}})

    async def answer() -> None:
        try:
            async for message in control:
                try:
                    reply = _reply(message.data, probe)
                except DecodeError:
                    continue
                if reply is not None:
                    control.post_message(reply)
        except UtilityProcessError:
            pass

    supervised = Supervised(control, restarts)
    supervised._task = asyncio.get_running_loop().create_task(answer())  # type: ignore[attr-defined]
    return supervised


def attach_blocking(port: ParentPort | None = None) -> Supervised:
    """:func:`attach` without anyone answering on the child's behalf: the child calls
    :meth:`Supervised.alive` from its loop at least once per heartbeat interval."""
    port = port if port is not None else parent_port()
    control, restarts = _take_control(port.recv())
    control.post_message({"Attached": {"answers": False}})
    return Supervised(control, restarts)
