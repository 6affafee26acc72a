"""The frame format of ``docs/PROTOCOL.md`` as pure functions over bytes: no I/O here.

A frame is a little-endian ``u32`` length (of the kind byte and the body), a kind byte and a
body. Every length read from a peer is checked against a limit before anything is allocated
for the frame.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from . import msgpack
from .errors import EncodeError, MessageTooLargeError, ProtocolError

MAGIC = b"UPRC"
VERSION = 1

KIND_HELLO = 0x01
KIND_MESSAGE = 0x02
KIND_PANIC = 0x03

#: Flag bit of a child's ``HELLO``: its library applied the sandbox the parent asked for.
#: A Python child cannot do that honestly, so it never sets it.
FLAG_SANDBOXED = 0x0001

#: The payload limit when the parent did not choose one, and of every ``MessageChannel``.
DEFAULT_MAX_MESSAGE_SIZE = 64 * 1024 * 1024
#: Room in a frame for the kind byte and the attachment list, over the payload limit.
ENVELOPE_ROOM = 4096
DEFAULT_MAX_FRAME_LEN = DEFAULT_MAX_MESSAGE_SIZE + ENVELOPE_ROOM
#: No limit is below this: every ``HELLO`` fits (its length field is 13).
MIN_FRAME_LEN = 16
#: The largest length field accepted before the parent's ``HELLO`` has set the limit (as the
#: Rust child: a ``HELLO``'s is 13; anything over this is refused before its body is read).
PRE_HELLO_MAX_FRAME_LEN = 64
#: The most descriptors one message may carry (the kernel's ``SCM_MAX_FD``).
MAX_ATTACHMENTS = 253
#: The largest shared buffer a process accepts from another.
MAX_RECEIVED_BUFFER = 1 << 30

ATTACH_PORT = 0x01
ATTACH_PORT_WITH_PREFIX = 0x02
ATTACH_BUFFER = 0x03
ATTACH_READ_ONLY_BUFFER = 0x04

_LEN = struct.Struct("<I")
_HELLO = struct.Struct("<4sHHI")
_ATTACHMENT = struct.Struct("<BQ")
ATTACHMENT_LEN = _ATTACHMENT.size  # 9


@dataclass(frozen=True)
class Hello:
    """The handshake each side sends first on a parent port."""

    version: int
    flags: int
    max_frame_len: int


@dataclass(frozen=True)
class Attachment:
    """One entry of a ``MESSAGE``'s attachment list: a kind and a ``u64`` (a port's channel
    id, or a shared buffer's length)."""

    kind: int
    value: int

    @property
    def fd_count(self) -> int:
        """How many descriptors travel for it: 2 for a port with a prefix, else 1."""
        return 2 if self.kind == ATTACH_PORT_WITH_PREFIX else 1


def max_message_size(max_frame_len: int) -> int:
    """The payload limit that goes with a frame limit."""
    return max(max_frame_len - ENVELOPE_ROOM, 0)


def encode_hello(max_frame_len: int, flags: int = 0) -> bytes:
    """A whole ``HELLO`` frame."""
    body = _HELLO.pack(MAGIC, VERSION, flags, max_frame_len)
    return _LEN.pack(1 + len(body)) + bytes([KIND_HELLO]) + body


def parse_hello(body: bytes | memoryview) -> Hello:
    """Checks a ``HELLO`` body; raises :class:`ProtocolError` on a wrong size, magic,
    version or an unknown flag."""
    if len(body) != _HELLO.size:
        raise ProtocolError(f"a HELLO body of {len(body)} bytes, not 12")
    magic, version, flags, max_frame_len = _HELLO.unpack(body)
    if magic != MAGIC:
        raise ProtocolError(f"a HELLO whose magic is {bytes(magic)!r}, not b'UPRC'")
    if version != VERSION:
        raise ProtocolError(f"a HELLO for protocol version {version}; this side speaks 1")
    if flags & ~FLAG_SANDBOXED:
        raise ProtocolError(f"a HELLO with unknown flags {flags:#06x}")
    return Hello(version, flags, max(max_frame_len, MIN_FRAME_LEN))


def frame_len(buf: bytes | bytearray | memoryview, start: int, max_frame_len: int) -> int | None:
    """The length field of the frame at ``buf[start:]``, checked against ``max_frame_len``
    (which is raised to :data:`MIN_FRAME_LEN`), or ``None`` if the field is not all there.
    Raises :class:`ProtocolError` for 0 or over the limit: call it before reading the body."""
    if len(buf) - start < 4:
        return None
    (n,) = _LEN.unpack_from(buf, start)
    if n == 0:
        raise ProtocolError("a frame of length 0 (no kind byte)")
    limit = max(max_frame_len, MIN_FRAME_LEN)
    if n > limit:
        raise ProtocolError(f"a frame of {n} bytes, over the limit of {limit}")
    return n


def parse_message(
    body: memoryview, max_message_size: int
) -> tuple[list[Attachment], memoryview]:
    """Splits a ``MESSAGE`` body into its attachments and payload; raises
    :class:`ProtocolError` for an empty body, a list cut short, an unknown kind, more than
    253 descriptors, or a payload over ``max_message_size``."""
    if len(body) < 1:
        raise ProtocolError("a MESSAGE without an attachment count")
    count = body[0]
    listed = count * ATTACHMENT_LEN
    if len(body) - 1 < listed:
        raise ProtocolError(f"a MESSAGE announcing {count} attachments whose list is cut short")
    attachments = []
    fds = 0
    for i in range(count):
        kind, value = _ATTACHMENT.unpack_from(body, 1 + i * ATTACHMENT_LEN)
        if kind not in (ATTACH_PORT, ATTACH_PORT_WITH_PREFIX, ATTACH_BUFFER, ATTACH_READ_ONLY_BUFFER):
            raise ProtocolError(f"an attachment of unknown kind {kind:#04x}")
        attachment = Attachment(kind, value)
        fds += attachment.fd_count
        attachments.append(attachment)
    if fds > MAX_ATTACHMENTS:
        raise ProtocolError(f"a MESSAGE with {fds} descriptors (at most {MAX_ATTACHMENTS})")
    payload = body[1 + listed :]
    if len(payload) > max_message_size:
        raise ProtocolError(
            f"a payload of {len(payload)} bytes, over the message limit of {max_message_size}"
        )
    return attachments, payload


def encode_message(
    payload: bytes | bytearray | memoryview,
    attachments: list[Attachment],
    max_frame_len: int,
) -> bytes:
    """A whole ``MESSAGE`` frame; raises :class:`MessageTooLargeError` when the payload is
    over the message limit or the frame over the frame limit."""
    limit = max_message_size(max_frame_len)
    if len(payload) > limit:
        raise MessageTooLargeError(len(payload), limit)
    fds = sum(a.fd_count for a in attachments)
    if fds > MAX_ATTACHMENTS:
        raise ValueError(f"{fds} descriptors in one message (at most {MAX_ATTACHMENTS})")
    envelope = bytearray([KIND_MESSAGE, len(attachments)])
    for a in attachments:
        envelope += _ATTACHMENT.pack(a.kind, a.value)
    n = len(envelope) + len(payload)
    if n > max(max_frame_len, MIN_FRAME_LEN):
        raise MessageTooLargeError(len(payload), limit)
    return _LEN.pack(n) + bytes(envelope) + bytes(payload)


def encode_panic(
    message: str, file: str, line: int, column: int, thread: str | None, max_frame_len: int
) -> bytes:
    """A whole ``PANIC`` frame; a message too long for the frame limit is cut short."""
    report: dict[str, Any] = {
        "message": message,
        "file": file,
        "line": min(max(line, 0), 0xFFFF_FFFF),
        "column": min(max(column, 0), 0xFFFF_FFFF),
        "thread": thread,
    }
    while True:
        try:
            body = msgpack.packb(report)
        except EncodeError:
            report["message"] = report["message"].encode("utf-8", "replace").decode("utf-8")
            report["file"] = report["file"].encode("utf-8", "replace").decode("utf-8")
            body = msgpack.packb(report)
        if 1 + len(body) <= max(max_frame_len, MIN_FRAME_LEN) or not report["message"]:
            break
        report["message"] = report["message"][: len(report["message"]) // 2]
    return _LEN.pack(1 + len(body)) + bytes([KIND_PANIC]) + body
