#!/usr/bin/env python3
"""A utility process in Python, written from docs/PROTOCOL.md alone: echoes every message.

It reads the parent's HELLO on descriptor 3, answers with its own, then sends every MESSAGE
payload back as a MESSAGE with no attachments, and exits 0 when the parent closes the port.
Anything that breaks the protocol ends it as section 2 says: it closes the port and exits
with code 2 and a line on stderr.
Standard library only.
"""

import os
import socket
import struct
import sys

PORT_FD = 3  # section 1: always 3 in version 1

KIND_HELLO = 0x01
KIND_MESSAGE = 0x02
KIND_PANIC = 0x03

MAGIC = b"UPRC"
VERSION = 1
HELLO_BODY = struct.Struct("<4sHHI")  # magic, version, flags, max_frame_len: 12 bytes
LEN = struct.Struct("<I")
PRE_HELLO_MAX_FRAME_LEN = 64  # section 2: the frame limit before the parent's HELLO
ENVELOPE_ROOM = 4096  # section 2: frame limit minus message limit


class ProtocolViolation(Exception):
    pass


def read_exact(sock, n):
    """n bytes, or None if the stream ends first (a partial frame is lost, section 2)."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        count = sock.recv_into(view[got:], n - got)
        if count == 0:
            return None
        got += count
    return bytes(buf)


def read_frame(sock, max_frame_len):
    """(kind, body) of the next frame, or None at end-of-file."""
    header = read_exact(sock, 4)
    if header is None:
        return None
    (length,) = LEN.unpack(header)
    if length == 0:
        raise ProtocolViolation("a frame with len = 0")
    if length > max_frame_len:
        # Checked before anything is allocated for the frame.
        raise ProtocolViolation(f"a frame of {length} bytes, over the limit of {max_frame_len}")
    rest = read_exact(sock, length)
    if rest is None:
        return None
    return rest[0], rest[1:]


def frame(kind, body):
    return LEN.pack(1 + len(body)) + bytes([kind]) + body


def parse_hello(kind, body):
    if kind != KIND_HELLO:
        raise ProtocolViolation(f"the first frame is of kind {kind:#04x}, not HELLO")
    if len(body) != HELLO_BODY.size:
        raise ProtocolViolation(f"a HELLO body of {len(body)} bytes")
    magic, version, flags, max_frame_len = HELLO_BODY.unpack(body)
    if magic != MAGIC:
        raise ProtocolViolation(f"a HELLO with magic {magic!r}")
    if version != VERSION:
        raise ProtocolViolation(f"a HELLO for version {version}")
    if flags & ~0x0001:
        # Bit 0 (SANDBOXED) is defined, though a parent sends 0; any other bit is unknown.
        raise ProtocolViolation(f"a HELLO with unknown flags {flags:#06x}")
    return max(max_frame_len, 16)  # limits under 16 are raised to 16 (section 3.1)


def main():
    if os.environ.get("UTILITY_PROCESS_PORT_FD") != str(PORT_FD):
        print("echo.py: not started as a utility process", file=sys.stderr)
        return 1
    # Programs we might start must not inherit the port (section 1).
    os.set_inheritable(PORT_FD, False)
    sock = socket.socket(fileno=PORT_FD)
    sock.setblocking(True)  # it is at start (section 1); this child relies on it

    # Section 5, step 1: the parent's HELLO, read under the pre-HELLO limit of 64 (section 2).
    first = read_frame(sock, PRE_HELLO_MAX_FRAME_LEN)
    if first is None:
        return 0
    max_frame_len = parse_hello(*first)

    # Step 2: our own HELLO, echoing the parent's limit.
    sock.sendall(frame(KIND_HELLO, HELLO_BODY.pack(MAGIC, VERSION, 0, max_frame_len)))

    # Step 3: echo every message.
    while True:
        received = read_frame(sock, max_frame_len)
        if received is None:
            return 0  # Step 4: the parent is gone.
        kind, body = received
        if kind == KIND_HELLO:
            raise ProtocolViolation("a second HELLO")
        if kind == KIND_PANIC:
            raise ProtocolViolation("a PANIC frame from the parent")
        if kind != KIND_MESSAGE:
            raise ProtocolViolation(f"an unknown frame kind {kind:#04x}")
        if len(body) < 1:
            raise ProtocolViolation("a MESSAGE without an attachment count")
        if body[0] != 0:
            raise ProtocolViolation(f"a MESSAGE announcing {body[0]} attachments")
        payload = body[1:]
        if len(payload) > max_frame_len - ENVELOPE_ROOM:
            # The message limit (section 2): a violation however it fits the frame limit.
            raise ProtocolViolation(
                f"a payload of {len(payload)} bytes, over {max_frame_len - ENVELOPE_ROOM}"
            )
        # Same payload, same envelope size: it fits the limit the parent's frame did.
        sock.sendall(frame(KIND_MESSAGE, bytes([0]) + payload))


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (BrokenPipeError, ConnectionResetError):
        sys.exit(0)  # the parent is gone mid-write: the same as end-of-file
    except ProtocolViolation as violation:
        os.close(PORT_FD)
        print(f"echo.py: the parent broke the protocol: {violation}", file=sys.stderr)
        sys.exit(2)
