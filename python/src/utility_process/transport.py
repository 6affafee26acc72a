"""One socket per port: frames and descriptors in and out (``docs/PROTOCOL.md`` sections 2-3).

A :class:`Channel` owns one end of a Unix stream socket. Receiving reads into a buffer and
decodes frames from its front; each batch of descriptors that arrives with a ``recvmsg`` is
noted with the range of stream bytes that call returned, and the ``MESSAGE`` that starts
inside that range claims it. Sending writes a frame whole, on the caller's thread, with its
descriptors in the ``sendmsg`` that carries its first byte.

All receiving state lives in the channel, so a receive that is interrupted (an asyncio task
cancelled while it waits) loses nothing.
"""

from __future__ import annotations

import array
import os
import select
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from . import wire
from .errors import ClosedError, ProtocolError

#: The smallest read asked of the socket.
READ_CHUNK = 64 * 1024
#: The most received descriptors held that no frame has claimed yet.
MAX_QUEUED_FDS = 4 * wire.MAX_ATTACHMENTS
#: How long handing a port over waits for the rest of a prefix it is still reading.
PREFIX_TIMEOUT = 5.0

_ANC_SPACE = socket.CMSG_SPACE(wire.MAX_ATTACHMENTS * 4)
_CLOEXEC = getattr(socket, "MSG_CMSG_CLOEXEC", 0)
_NOSIGNAL = getattr(socket, "MSG_NOSIGNAL", 0)

#: What :meth:`Channel.recv` returns when it may not block and no frame is whole yet.
WOULD_BLOCK = object()


@dataclass
class _Batch:
    start: int
    end: int
    fds: list[int]


@dataclass
class Frame:
    """A received ``MESSAGE``: its attachments, payload and descriptors (owned by the
    receiver from now on)."""

    attachments: list[wire.Attachment]
    payload: bytes
    fds: list[int] = field(default_factory=list)


def _close_fds(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def is_unix_stream_socket(fd: int) -> bool:
    """Whether ``fd`` is an ``AF_UNIX`` ``SOCK_STREAM`` socket."""
    try:
        s = socket.socket(fileno=os.dup(fd))
    except OSError:
        return False
    try:
        return s.family == socket.AF_UNIX and s.type == socket.SOCK_STREAM
    finally:
        s.close()


class Channel:
    """One end of a channel: the parent port or one end of a ``MessageChannel``."""

    def __init__(
        self,
        sock: socket.socket,
        max_frame_len: int,
        channel_id: int,
        prefix: socket.socket | None = None,
    ) -> None:
        sock.setblocking(True)
        self.sock: socket.socket | None = sock
        self.prefix = prefix
        self.max_frame_len = max(max_frame_len, wire.MIN_FRAME_LEN)
        self.channel_id = channel_id
        self._buf = bytearray()
        self._head = 0
        self._decoded = 0  # stream offset of _buf[_head]
        self._batches: deque[_Batch] = deque()
        self._queued_fds = 0
        self._eof = False
        self._closed = False
        self._recv_lock = threading.RLock()
        self._send_lock = threading.Lock()

    # ---- state --------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether this side closed the channel or sent it away."""
        return self._closed

    def fileno_to_wait(self) -> int:
        """The descriptor a waiter should watch for readability (the prefix first)."""
        if self.prefix is not None:
            return self.prefix.fileno()
        if self.sock is None:
            raise ClosedError("the port is closed")
        return self.sock.fileno()

    def close(self) -> None:
        """Closes the channel now: the peer reads end-of-file."""
        if self._closed:
            return
        self._closed = True
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        # A reader blocked in recvmsg wakes up (end-of-file) and releases the lock.
        with self._recv_lock:
            self._release()

    def _release(self) -> None:
        for batch in self._batches:
            _close_fds(batch.fds)
        self._batches.clear()
        self._queued_fds = 0
        self._buf = bytearray()
        self._head = 0
        for s in (self.prefix, self.sock):
            if s is not None:
                s.close()
        self.prefix = None
        self.sock = None

    def _violation(self, why: str) -> ProtocolError:
        self._closed = True
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._release()
        return ProtocolError(f"the peer broke the protocol ({why}); the port is closed")

    # ---- receiving ----------------------------------------------------------------------

    def read_hello(self, timeout: float) -> wire.Hello:
        """Reads the parent's ``HELLO``, the first frame, under the pre-``HELLO`` limit.
        Raises :class:`ProtocolError` if it is not one, :class:`TimeoutError` if none comes,
        :class:`ClosedError` at end-of-file."""
        deadline = time.monotonic() + timeout
        with self._recv_lock:
            while True:
                n = self._checked_len(wire.PRE_HELLO_MAX_FRAME_LEN)
                if n is not None and len(self._buf) - self._head >= 4 + n:
                    kind = self._buf[self._head + 4]
                    if kind != wire.KIND_HELLO:
                        raise self._violation(f"the first frame is of kind {kind:#04x}, not HELLO")
                    try:
                        hello = wire.parse_hello(
                            bytes(self._buf[self._head + 5 : self._head + 4 + n])
                        )
                    except ProtocolError as e:
                        raise self._violation(str(e)) from None
                    self._consume(4 + n)
                    if self._batches:
                        raise self._violation("descriptors arrived with the HELLO")
                    return hello
                left = deadline - time.monotonic()
                assert self.sock is not None
                if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                    raise TimeoutError("no HELLO from the parent")
                have = len(self._buf) - self._head
                # Exactly to the end of the HELLO: what follows stays in the socket.
                if not self._fill(block=False, want=(4 if n is None else 4 + n) - have):
                    if self._eof:
                        raise ClosedError("the parent closed the port before its HELLO")

    def _checked_len(self, limit: int) -> int | None:
        try:
            return wire.frame_len(self._buf, self._head, limit)
        except ProtocolError as e:
            raise self._violation(str(e)) from None

    def recv(self, block: bool = True) -> Frame | None | object:
        """The next ``MESSAGE``; ``None`` at end-of-file or once closed; :data:`WOULD_BLOCK`
        when ``block`` is false and no frame is whole. Raises :class:`ProtocolError` (and
        closes the channel) when the peer breaks the protocol."""
        with self._recv_lock:
            while True:
                if self._closed:
                    if self.sock is not None:
                        self._release()
                    return None
                frame = self._decode()
                if frame is not None:
                    return frame
                if self._eof:
                    # A stream that ends mid-frame loses that frame.
                    return None
                if not self._fill(block=block, want=self._want()):
                    if self._eof or self._closed:
                        continue
                    return WOULD_BLOCK

    def _want(self) -> int:
        n = wire.frame_len(self._buf, self._head, self.max_frame_len)
        have = len(self._buf) - self._head
        return max(READ_CHUNK, (4 + n - have) if n is not None else 0)

    def _consume(self, n: int) -> None:
        self._head += n
        self._decoded += n
        if self._head == len(self._buf):
            self._buf = bytearray()
            self._head = 0
        elif self._head > READ_CHUNK and self._head * 2 > len(self._buf):
            del self._buf[: self._head]
            self._head = 0

    def _decode(self) -> Frame | None:
        n = self._checked_len(self.max_frame_len)
        if n is None or len(self._buf) - self._head < 4 + n:
            return None
        start = self._head
        kind = self._buf[start + 4]
        if kind == wire.KIND_HELLO:
            raise self._violation("a HELLO after the first frame")
        if kind == wire.KIND_PANIC:
            raise self._violation("a PANIC frame, which only a child may send its parent")
        if kind != wire.KIND_MESSAGE:
            raise self._violation(f"a frame of unknown kind {kind:#04x}")
        body = memoryview(self._buf)[start + 5 : start + 4 + n]
        try:
            try:
                attachments, payload_view = wire.parse_message(
                    body, wire.max_message_size(self.max_frame_len)
                )
                payload = bytes(payload_view)
                payload_view.release()
            finally:
                body.release()
        except ProtocolError as e:
            raise self._violation(str(e)) from None
        at = self._decoded
        count = sum(a.fd_count for a in attachments)
        unclaimed_end = at if count else at + 4 + n
        if self._batches and self._batches[0].end <= unclaimed_end:
            raise self._violation("descriptors arrived that no message claims")
        fds: list[int] = []
        if count:
            batch = self._batches[0] if self._batches else None
            if batch is None or not (batch.start <= at < batch.end) or len(batch.fds) != count:
                raise self._violation("a message's descriptors are missing or miscounted")
            self._batches.popleft()
            self._queued_fds -= count
            fds = batch.fds
        self._consume(4 + n)
        return Frame(attachments, payload, fds)

    def _fill(self, block: bool, want: int) -> bool:
        """Reads once from the prefix (first) or the socket. True when bytes or a source's
        end came in; False when nothing could be read without blocking, or at end-of-file."""
        source = self.prefix if self.prefix is not None else self.sock
        if source is None:
            self._eof = True
            return False
        flags = _CLOEXEC | (0 if block else socket.MSG_DONTWAIT)
        try:
            data, ancdata, msg_flags, _ = source.recvmsg(want, _ANC_SPACE, flags)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as e:
            if self._closed:
                return False
            if source is not self.prefix and not isinstance(e, ConnectionResetError):
                raise
            # A reset is an end; a broken prefix just ends the prefix.
            data, ancdata, msg_flags = b"", [], 0
        fds: list[int] = []
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                got = array.array("i")
                got.frombytes(payload[: len(payload) - len(payload) % got.itemsize])
                fds.extend(got)
        if msg_flags & socket.MSG_CTRUNC:
            _close_fds(fds)
            raise self._violation("a truncated control message (descriptors were lost)")
        if not data:
            _close_fds(fds)
            if source is self.prefix:
                self.prefix.close()
                self.prefix = None
                return True
            self._eof = True
            return False
        stream_end = self._decoded + (len(self._buf) - self._head)
        if fds:
            self._batches.append(_Batch(stream_end, stream_end + len(data), fds))
            self._queued_fds += len(fds)
            if self._queued_fds > MAX_QUEUED_FDS:
                raise self._violation("a flood of descriptors that no message claims")
        self._buf += data
        return True

    # ---- sending ------------------------------------------------------------------------

    def send(self, frame: bytes, fds: list[int] | None = None) -> None:
        """Writes one whole frame, blocking until the socket has taken it. Raises
        :class:`ClosedError` when the channel is closed or the peer is gone."""
        with self._send_lock:
            sock = self.sock
            if self._closed or sock is None:
                raise ClosedError("the port is closed")
            try:
                sent = 0
                if fds:
                    rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
                    sent = sock.sendmsg([frame], rights, _NOSIGNAL)
                view = memoryview(frame)
                while sent < len(frame):
                    sent += sock.send(view[sent:], _NOSIGNAL)
            except (BrokenPipeError, ConnectionResetError) as e:
                raise ClosedError(f"the other end is gone ({e.strerror})") from None
            except OSError as e:
                if self._closed:
                    raise ClosedError("the port is closed") from None
                raise

    # ---- handing over -------------------------------------------------------------------

    def hand_over(self) -> tuple[wire.Attachment, list[int]]:
        """Prepares this port to travel: what to announce and the descriptors to send (the
        prefix socket first, when bytes were read that nobody received). The caller sends
        them and then calls :meth:`forget`."""
        with self._recv_lock:
            if self._closed or self.sock is None:
                raise ClosedError("a closed port cannot be sent")
            deadline = time.monotonic() + PREFIX_TIMEOUT
            budget = self.max_frame_len + wire.DEFAULT_MAX_MESSAGE_SIZE
            while self.prefix is not None:
                left = deadline - time.monotonic()
                if left <= 0 or len(self._buf) - self._head > budget:
                    self.prefix.close()
                    self.prefix = None
                    break
                if not select.select([self.prefix], [], [], left)[0]:
                    continue
                self._fill(block=True, want=READ_CHUNK)
            pending = bytes(self._buf[self._head :])
            if not pending and not self._batches:
                return wire.Attachment(wire.ATTACH_PORT, self.channel_id), [self.sock.fileno()]
            starts = []
            at = 0
            while at < len(pending):
                starts.append(at)
                if at + 4 > len(pending):
                    break
                at += 4 + int.from_bytes(pending[at : at + 4], "little")
            segments: list[tuple[int, list[int]]] = []
            for batch in self._batches:
                claimed = next(
                    (s for s in starts if batch.start <= self._decoded + s < batch.end), None
                )
                if claimed is None:
                    _close_fds(batch.fds)
                else:
                    segments.append((claimed, batch.fds))
            self._batches.clear()
            self._queued_fds = 0
            self._buf = bytearray()
            self._head = 0
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            threading.Thread(
                target=_write_prefix, args=(ours, pending, segments), daemon=True,
                name="utility-process-prefix",
            ).start()
            self._handed_prefix = theirs
            return (
                wire.Attachment(wire.ATTACH_PORT_WITH_PREFIX, self.channel_id),
                [theirs.fileno(), self.sock.fileno()],
            )

    def forget(self) -> None:
        """After the port was sent (or failed to be): closes this process's descriptors
        without shutting the socket down, which would end it for its new holder too."""
        with self._recv_lock:
            self._closed = True
            handed = getattr(self, "_handed_prefix", None)
            if handed is not None:
                handed.close()
            self._release()


def _write_prefix(sock: socket.socket, pending: bytes, segments: list[tuple[int, list[int]]]) -> None:
    """Writes the bytes a port had read but not delivered into its prefix socket, each batch
    of descriptors with the first byte of the frame that claims it, then closes it."""
    try:
        cuts = sorted(segments, key=lambda s: s[0])
        at = 0
        view = memoryview(pending)
        for i, (offset, fds) in enumerate(cuts):
            if at < offset:
                sock.sendall(view[at:offset])
                at = offset
            end = cuts[i + 1][0] if i + 1 < len(cuts) else len(pending)
            rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
            sent = sock.sendmsg([view[at:end]], rights, _NOSIGNAL)
            _close_fds(fds)
            if sent < end - at:
                sock.sendall(view[at + sent : end])
            at = end
        if at < len(pending):
            sock.sendall(view[at:])
    except OSError:
        pass
    finally:
        sock.close()
