#!/usr/bin/env python3
"""A hostile utility process: after a correct HELLO it sends one MESSAGE announcing a shared
buffer (attachment 0x03, or 0x04 read-only) whose descriptor lies, chosen by argv[1]:

  pipe      a pipe, not a memfd
  size      a sealed memfd of 4096 bytes announced as 8192
  unsealed  a memfd of the right size whose size is not sealed
  writable  a size-sealed memfd announced read-only without the write seal

Then it waits to be killed. Standard library only; written from docs/PROTOCOL.md.
"""

import fcntl
import os
import socket
import struct
import sys
import time

port = socket.socket(fileno=3)
port.setblocking(True)
hello = b""
while len(hello) < 17:
    chunk = port.recv(17 - len(hello))
    if not chunk:
        sys.exit(0)
    hello += chunk
# Checked as section 3.1 says: the length and kind, magic, version, no unknown flag.
length, kind, magic, version, flags, max_frame_len = struct.unpack("<IB4sHHI", hello)
if (length, kind, magic, version) != (13, 0x01, b"UPRC", 1) or flags & ~0x0001:
    sys.exit(f"bad_buffer.py: the parent's HELLO is invalid: {hello!r}")
max_frame_len = max(max_frame_len, 16)
body = struct.pack("<4sHHI", b"UPRC", 1, 0, max_frame_len)
port.sendall(struct.pack("<IB", 1 + len(body), 0x01) + body)

mode = sys.argv[1]
kind, announced = 0x03, 4096
if mode == "pipe":
    fd, _ = os.pipe()
else:
    fd = os.memfd_create("liar", os.MFD_ALLOW_SEALING)
    os.ftruncate(fd, 4096)
    if mode != "unsealed":
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW)
    if mode == "size":
        announced = 8192
    if mode == "writable":
        kind = 0x04

payload = b"\xa1x"  # the MessagePack string "x"
envelope = struct.pack("<BBQ", 1, kind, announced) + payload
frame = struct.pack("<IB", 1 + len(envelope), 0x02) + envelope
port.sendmsg([frame], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))])
time.sleep(60)
