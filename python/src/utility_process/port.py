"""Ports: :class:`MessagePort`, :class:`MessageChannel`, :class:`ParentPort` and what they
receive, :class:`Message`."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from typing import Any, AsyncIterator, Iterator, Sequence

from . import msgpack, wire
from .errors import ProtocolError
from .shm import SharedBuffer
from .transport import WOULD_BLOCK, Channel, Frame, is_unix_stream_socket

_UNSET = object()


class Message:
    """A received message: its bytes, the value they encode, and what travelled with it.

    The wire does not say whether the sender posted a value (MessagePack) or raw bytes:
    :attr:`bytes` is always the payload as sent, and :attr:`data` decodes it as MessagePack
    (raising :class:`~utility_process.DecodeError` when it is not exactly one value).
    """

    __slots__ = ("bytes", "ports", "buffers", "_data")

    def __init__(
        self, payload: bytes, ports: list["MessagePort"], buffers: list[SharedBuffer]
    ) -> None:
        #: The payload as the sender's codec wrote it.
        self.bytes = payload
        #: The ports that travelled with the message, in the order they were posted.
        self.ports = ports
        #: The shared buffers that travelled with the message, in order.
        self.buffers = buffers
        self._data: Any = _UNSET

    @property
    def data(self) -> Any:
        """The payload decoded as one MessagePack value (decoded once, then kept)."""
        if self._data is _UNSET:
            self._data = msgpack.unpackb(self.bytes)
        return self._data

    def __len__(self) -> int:
        return len(self.bytes)

    def __repr__(self) -> str:
        return f"Message(len={len(self.bytes)}, ports={len(self.ports)}, buffers={len(self.buffers)})"


class MessagePort:
    """One end of a channel, in whichever process holds it.

    Messages arrive in the order they were posted. :meth:`recv` blocks the thread;
    :meth:`recv_async` (and ``async for``) waits on the running asyncio loop. Posting writes
    the frame before it returns (it blocks while the other end does not read and the socket
    is full). A port is sent by passing it in ``ports=``: it then belongs to the receiving
    process, and this object is closed.
    """

    def __init__(self, channel: Channel) -> None:
        self._channel = channel

    # ---- posting ------------------------------------------------------------------------

    def post_message(
        self,
        value: Any,
        ports: Sequence["MessagePort"] = (),
        buffers: Sequence[SharedBuffer] = (),
    ) -> None:
        """Posts ``value`` as MessagePack, with ``ports`` (which move to the receiver) and
        shared ``buffers``.

        Raises :class:`~utility_process.EncodeError`,
        :class:`~utility_process.MessageTooLargeError`, :class:`~utility_process.ClosedError`,
        and ``ValueError`` for a port sent over itself or its own other end. Ports passed are
        closed here whether or not the post succeeds.
        """
        self._post(msgpack.packb(value), ports, buffers)

    def post_bytes(
        self,
        data: bytes | bytearray | memoryview,
        ports: Sequence["MessagePort"] = (),
        buffers: Sequence[SharedBuffer] = (),
    ) -> None:
        """Posts raw bytes, not encoded (the receiver's ``Message::bytes`` in Rust)."""
        self._post(data, ports, buffers)

    def _post(
        self,
        payload: bytes | bytearray | memoryview,
        ports: Sequence["MessagePort"],
        buffers: Sequence[SharedBuffer],
    ) -> None:
        ports = list(ports)
        try:
            for port in ports:
                if not isinstance(port, MessagePort) or isinstance(port, ParentPort):
                    raise ValueError("only MessagePort objects can be sent (not the parent port)")
                if port is self:
                    raise ValueError("a port cannot be sent over itself")
                if self._channel.channel_id and port._channel.channel_id == self._channel.channel_id:
                    raise ValueError("a port cannot be sent over its own other end")
            if len({id(p) for p in ports}) != len(ports):
                raise ValueError("the same port is listed twice")
            attachments: list[wire.Attachment] = []
            fds: list[int] = []
            for port in ports:
                attachment, port_fds = port._channel.hand_over()
                attachments.append(attachment)
                fds.extend(port_fds)
            for buffer in buffers:
                kind = wire.ATTACH_READ_ONLY_BUFFER if buffer.read_only else wire.ATTACH_BUFFER
                attachments.append(wire.Attachment(kind, len(buffer)))
                fds.append(buffer.fileno())
            frame = wire.encode_message(payload, attachments, self._channel.max_frame_len)
            self._channel.send(frame, fds)
        finally:
            for port in ports:
                port._channel.forget()

    # ---- receiving ----------------------------------------------------------------------

    def recv(self) -> Message | None:
        """The next message, blocking this thread; ``None`` once the other end is closed or
        gone. Raises :class:`~utility_process.ProtocolError` (once: the port is then closed)
        when the other end breaks the protocol."""
        frame = self._channel.recv(block=True)
        assert frame is not WOULD_BLOCK
        return None if frame is None else self._deliver(frame)  # type: ignore[arg-type]

    def try_recv(self) -> Message | None | object:
        """The next message if one is whole now, else :data:`WOULD_BLOCK`; ``None`` at the
        end."""
        frame = self._channel.recv(block=False)
        if frame is WOULD_BLOCK or frame is None:
            return frame
        return self._deliver(frame)  # type: ignore[arg-type]

    def _deliver(self, frame: Frame) -> Message:
        try:
            return _message(frame)
        except ProtocolError as e:
            # A descriptor that is not what its attachment says: the peer broke the protocol.
            self._channel.close()
            raise ProtocolError(f"the peer broke the protocol ({e}); the port is closed") from None

    async def recv_async(self) -> Message | None:
        """:meth:`recv` for asyncio: waits on the running loop. Cancel safe: a message is
        never lost by cancelling the wait. Do not receive on one port from a thread and a
        loop at once."""
        loop = asyncio.get_running_loop()
        while True:
            got = self.try_recv()
            if got is not WOULD_BLOCK:
                return got  # type: ignore[return-value]
            fd = self._channel.fileno_to_wait()
            ready = loop.create_future()
            loop.add_reader(fd, lambda: ready.done() or ready.set_result(None))
            try:
                await ready
            finally:
                loop.remove_reader(fd)

    def __iter__(self) -> Iterator[Message]:
        while (message := self.recv()) is not None:
            yield message

    async def __aiter__(self) -> AsyncIterator[Message]:
        while (message := await self.recv_async()) is not None:
            yield message

    # ---- the rest -----------------------------------------------------------------------

    def close(self) -> None:
        """Closes the port now: the other end's ``recv`` returns ``None``, and posting on
        either end fails."""
        self._channel.close()

    @property
    def closed(self) -> bool:
        """Whether this side closed the port or sent it away."""
        return self._channel.closed

    @property
    def channel_id(self) -> int:
        """The channel's id, shared by both ends (0 for the parent port)."""
        return self._channel.channel_id

    def __enter__(self) -> "MessagePort":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"{type(self).__name__}(channel={self.channel_id:#x}, {state})"


class ParentPort(MessagePort):
    """The child's end of the port to its parent, from :func:`parent_port`."""

    def __init__(self, channel: Channel, service_name: str) -> None:
        super().__init__(channel)
        #: The service name the parent gave this process.
        self.service_name = service_name

    @property
    def max_message_size(self) -> int:
        """The largest payload either side may send (the parent's limit)."""
        return wire.max_message_size(self._channel.max_frame_len)


class MessageChannel:
    """A pair of entangled ports (``socketpair(AF_UNIX, SOCK_STREAM)``): what one posts, the
    other receives. ``port1, port2 = MessageChannel()`` works too."""

    def __init__(self) -> None:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        channel_id = new_channel_id()
        self.port1 = MessagePort(Channel(a, wire.DEFAULT_MAX_FRAME_LEN, channel_id))
        self.port2 = MessagePort(Channel(b, wire.DEFAULT_MAX_FRAME_LEN, channel_id))

    def __iter__(self) -> Iterator[MessagePort]:
        return iter((self.port1, self.port2))


def new_channel_id() -> int:
    """A random non-zero 64-bit id (0 means the parent port)."""
    return secrets.randbits(64) or 1


def _message(frame: Frame) -> Message:
    """Turns the descriptors of a frame into ports and buffers, checking each."""
    ports: list[MessagePort] = []
    buffers: list[SharedBuffer] = []
    fds = list(frame.fds)
    try:
        for attachment in frame.attachments:
            if attachment.kind in (wire.ATTACH_PORT, wire.ATTACH_PORT_WITH_PREFIX):
                prefix = None
                if attachment.kind == wire.ATTACH_PORT_WITH_PREFIX:
                    prefix = _socket(fds.pop(0))
                port_socket = _socket(fds.pop(0))
                ports.append(
                    MessagePort(
                        Channel(port_socket, wire.DEFAULT_MAX_FRAME_LEN, attachment.value, prefix)
                    )
                )
            else:
                read_only = attachment.kind == wire.ATTACH_READ_ONLY_BUFFER
                buffers.append(SharedBuffer.receive(fds.pop(0), attachment.value, read_only))
    except BaseException:
        for fd in fds:
            os.close(fd)
        for port in ports:
            port.close()
        for buffer in buffers:
            buffer.close()
        raise
    return Message(frame.payload, ports, buffers)


def _socket(fd: int) -> socket.socket:
    if not is_unix_stream_socket(fd):
        os.close(fd)
        raise ProtocolError("a port that is not a Unix stream socket")
    return socket.socket(fileno=fd)


__all__ = ["Message", "MessagePort", "MessageChannel", "ParentPort", "new_channel_id"]
