"""Frames and channels in one process: hostile frames close the port with ProtocolError, never
hang or allocate what a length announces; ports and buffers travel with their messages."""

import os
import socket
import struct
import threading
import time

import pytest

from utility_process import (
    ClosedError,
    MessageChannel,
    MessageTooLargeError,
    ProtocolError,
    SharedBuffer,
)
from utility_process import wire
from utility_process.port import MessagePort
from utility_process.transport import Channel


def raw_pair(max_frame_len=wire.DEFAULT_MAX_FRAME_LEN):
    """A port on one end of a socket pair, and the raw socket on the other."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return MessagePort(Channel(a, max_frame_len, 7)), b


def frame(kind, body):
    return struct.pack("<IB", 1 + len(body), kind) + body


def test_the_documented_hello_bytes():
    assert wire.encode_hello(0x04001000) == bytes.fromhex("0d000000015550524301000000001000 04".replace(" ", ""))
    hello = wire.parse_hello(wire.encode_hello(0x04001000)[5:])
    assert hello == wire.Hello(1, 0, 0x04001000)


@pytest.mark.parametrize(
    "body, why",
    [
        (b"UPRC\x01\x00\x00\x00\x00\x10\x00", "not 12"),
        (b"UPRX\x01\x00\x00\x00\x00\x10\x00\x04", "magic"),
        (b"UPRC\x02\x00\x00\x00\x00\x10\x00\x04", "version 2"),
        (b"UPRC\x01\x00\x02\x00\x00\x10\x00\x04", "unknown flags"),
    ],
)
def test_bad_hellos_are_refused(body, why):
    with pytest.raises(ProtocolError, match=why):
        wire.parse_hello(body)


def test_the_sandboxed_flag_is_accepted_and_small_limits_are_raised_to_16():
    assert wire.parse_hello(b"UPRC\x01\x00\x01\x00\x01\x00\x00\x00") == wire.Hello(1, 1, 16)


def test_a_message_round_trips_through_a_channel_with_its_value():
    port1, port2 = MessageChannel()
    port1.post_message({"seq": 1, "body": [1, 2.5, None, b"\x00"]})
    port1.post_bytes(b"\xc1 raw")
    assert port2.recv().data == {"seq": 1, "body": [1, 2.5, None, b"\x00"]}
    raw = port2.recv()
    assert raw.bytes == b"\xc1 raw"
    port1.close()
    assert port2.recv() is None
    with pytest.raises(ClosedError):
        port2.post_message(1)


def test_the_documented_message_bytes_decode():
    port, peer = raw_pair()
    peer.sendall(bytes.fromhex("05000000020 0a26869".replace(" ", "")))
    assert port.recv().data == "hi"


@pytest.mark.parametrize(
    "data, why",
    [
        (struct.pack("<I", 0xFFFFFFFF), "over the limit"),
        (struct.pack("<I", wire.DEFAULT_MAX_FRAME_LEN + 1), "over the limit"),
        (b"\x00\x00\x00\x00", "length 0"),
        (frame(0x07, b""), "unknown kind"),
        (frame(wire.KIND_HELLO, wire.encode_hello(100)[5:]), "HELLO after"),
        (frame(wire.KIND_PANIC, b"\x80"), "PANIC"),
        (frame(wire.KIND_MESSAGE, b""), "attachment count"),
        (frame(wire.KIND_MESSAGE, b"\x03\x01\x00"), "cut short"),
        (frame(wire.KIND_MESSAGE, b"\x01\x09" + b"\x00" * 8), "unknown kind"),
        (frame(wire.KIND_MESSAGE, bytes([200]) + b"\x02" + b"\x00" * 8 + b"\x02" * (9 * 199)),
         "descriptors"),
        (frame(wire.KIND_MESSAGE, b"\x01\x01" + b"\x00" * 8), "missing or miscounted"),
    ],
)
def test_a_hostile_frame_closes_the_port_with_a_protocol_error(data, why):
    port, peer = raw_pair()
    peer.sendall(data)
    start = time.monotonic()
    with pytest.raises(ProtocolError, match=why):
        port.recv()
    assert time.monotonic() - start < 1
    assert port.recv() is None, "a port is closed after a violation"
    peer.settimeout(1)
    assert peer.recv(1) == b"", "the peer sees the close"


def test_a_payload_over_the_message_limit_is_a_violation_though_the_frame_fits():
    limit = 16 + wire.ENVELOPE_ROOM + 10
    port, peer = raw_pair(limit)
    peer.sendall(frame(wire.KIND_MESSAGE, b"\x00" + b"x" * (limit - 10)))
    with pytest.raises(ProtocolError, match="message limit"):
        port.recv()


def test_a_frame_cut_short_by_the_end_of_the_stream_is_lost_not_delivered():
    port, peer = raw_pair()
    peer.sendall(frame(wire.KIND_MESSAGE, b"\x00\xa2hi")[:-1])
    peer.close()
    assert port.recv() is None


def test_descriptors_that_no_message_claims_are_a_violation():
    port, peer = raw_pair()
    r, w = os.pipe()
    plain = frame(wire.KIND_MESSAGE, b"\x00\xc0")
    peer.sendmsg([plain], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", r))])
    with pytest.raises(ProtocolError, match="no message claims"):
        port.recv()
    os.close(r)
    os.close(w)


def test_a_frame_delivered_a_byte_at_a_time_arrives_whole():
    port, peer = raw_pair()
    data = frame(wire.KIND_MESSAGE, b"\x00\xa5hello")

    def dribble():
        for i in range(len(data)):
            peer.sendall(data[i : i + 1])
            time.sleep(0.001)

    threading.Thread(target=dribble).start()
    assert port.recv().data == "hello"


def test_posting_over_the_limit_raises_message_too_large_and_the_port_stays_usable():
    port1, port2 = MessageChannel()
    with pytest.raises(MessageTooLargeError):
        port1.post_bytes(bytes(wire.DEFAULT_MAX_MESSAGE_SIZE + 1))
    port1.post_message("still here")
    assert port2.recv().data == "still here"


def test_a_port_travels_with_a_message_and_works_both_ways():
    link1, link2 = MessageChannel()
    a, b = MessageChannel()
    link1.post_message("take this", ports=[b])
    assert b.closed
    message = link2.recv()
    (b2,) = message.ports
    assert b2.channel_id == a.channel_id
    a.post_message(1)
    assert b2.recv().data == 1
    b2.post_message(2)
    assert a.recv().data == 2


def test_a_port_with_unread_messages_takes_them_along_in_order_through_a_prefix():
    link1, link2 = MessageChannel()
    a, b = MessageChannel()
    for i in range(50):
        a.post_message(i)
    inner1, inner2 = MessageChannel()
    a.post_message("with a port", ports=[inner1])
    first = b.recv()  # b has now read everything into its buffer
    assert first.data == 0
    link1.post_message("moving", ports=[b])
    (moved,) = link2.recv().ports
    assert [moved.recv().data for _ in range(49)] == list(range(1, 50))
    carried = moved.recv()
    assert carried.data == "with a port"
    (inner,) = carried.ports
    inner2.post_message("through")
    assert inner.recv().data == "through"
    a.post_message("after")
    assert moved.recv().data == "after"


def test_a_port_cannot_travel_over_its_own_other_end_or_itself():
    a, b = MessageChannel()
    with pytest.raises(ValueError, match="other end"):
        a.post_message(None, ports=[b])
    c, _ = MessageChannel()
    with pytest.raises(ValueError, match="itself"):
        c.post_message(None, ports=[c])


def test_closing_one_end_ends_the_others_blocked_recv():
    a, b = MessageChannel()
    threading.Timer(0.05, a.close).start()
    assert b.recv() is None


def test_a_shared_buffer_travels_and_is_shared_and_a_frozen_one_is_read_only():
    a, b = MessageChannel()
    buf = SharedBuffer.create(4096)
    buf.view[:3] = b"abc"
    a.post_message("buf", buffers=[buf])
    (got,) = b.recv().buffers
    assert bytes(got.view[:3]) == b"abc"
    got.view[3:4] = b"d"
    assert bytes(buf.view[:4]) == b"abcd"
    got.close()
    buf.freeze()
    a.post_message("frozen", buffers=[buf])
    (frozen,) = b.recv().buffers
    assert frozen.read_only and frozen.view.readonly
    with pytest.raises(TypeError):
        frozen.view[0:1] = b"x"


@pytest.mark.parametrize("lie", ["pipe", "size", "unsealed", "writable"])
def test_a_shared_buffer_that_lies_is_a_violation(lie):
    port, peer = raw_pair()
    kind, announced = wire.ATTACH_BUFFER, 4096
    if lie == "pipe":
        fd, _ = os.pipe()
    else:
        import fcntl

        fd = os.memfd_create("liar", os.MFD_ALLOW_SEALING)
        os.ftruncate(fd, 4096)
        if lie != "unsealed":
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW)
        if lie == "size":
            announced = 8192
        if lie == "writable":
            kind = wire.ATTACH_READ_ONLY_BUFFER
    data = frame(wire.KIND_MESSAGE, struct.pack("<BBQ", 1, kind, announced) + b"\xc0")
    peer.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))])
    with pytest.raises(ProtocolError):
        port.recv()
    assert port.recv() is None


def test_a_port_that_is_not_a_stream_socket_is_a_violation():
    port, peer = raw_pair()
    d1, d2 = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    data = frame(wire.KIND_MESSAGE, struct.pack("<BBQ", 1, wire.ATTACH_PORT, 1) + b"\xc0")
    peer.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", d1.fileno()))])
    with pytest.raises(ProtocolError, match="not a Unix stream socket"):
        port.recv()


def test_recv_async_waits_on_the_loop_and_cancelling_loses_nothing():
    import asyncio

    a, b = MessageChannel()

    async def main():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(b.recv_async(), 0.05)
        a.post_message("late")
        assert (await b.recv_async()).data == "late"
        a.post_message("x")
        a.close()
        assert [m.data async for m in b] == ["x"]

    asyncio.run(main())


def test_outside_a_utility_process_parent_port_says_so(monkeypatch):
    from utility_process import NotAUtilityProcessError, child

    monkeypatch.delenv("UTILITY_PROCESS_PORT_FD", raising=False)
    with pytest.raises(NotAUtilityProcessError, match="not started by utility_process::fork"):
        child._connect()
