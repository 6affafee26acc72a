"""The pool worker and supervised-child sides against a fake parent on a socket pair."""

import socket
import struct
import threading

import pytest

from utility_process import MessageChannel, msgpack, wire
from utility_process.port import MessagePort, ParentPort
from utility_process.pool import (
    BAD_REQUEST, CANCEL, CANCELLED, FAILED, INIT_FAILED, PROTOCOL, READY, REPLY, TASK, InitError,
    serve,
)
from utility_process.supervisor import NotSupervisedError, attach
from utility_process.transport import Channel

H = struct.Struct("<BQ")


def fake_parent():
    """(the child's ParentPort, the parent's end as a MessagePort)."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    child = ParentPort(Channel(a, wire.DEFAULT_MAX_FRAME_LEN, 0), "test")
    parent = MessagePort(Channel(b, wire.DEFAULT_MAX_FRAME_LEN, 0))
    return child, parent


def answers(parent, count):
    out = []
    for _ in range(count):
        raw = parent.recv().bytes
        kind, task_id = H.unpack_from(raw)
        out.append((kind, task_id, raw[H.size :]))
    return out


def test_a_worker_says_ready_then_answers_each_task_exactly_once():
    child, parent = fake_parent()
    release = threading.Event()

    def handler(job, ctx):
        if job == "wait":
            release.wait(5)
            return "waited"
        if job == "fail":
            raise ValueError("told to fail")
        return job * 2

    worker = threading.Thread(target=serve, args=(handler,), kwargs={"port": child}, daemon=True)
    worker.start()
    assert parent.recv().bytes == H.pack(READY, 0) + PROTOCOL
    parent.post_bytes(H.pack(TASK, 1) + msgpack.packb("wait"))
    parent.post_bytes(H.pack(TASK, 2) + msgpack.packb(21))
    parent.post_bytes(H.pack(CANCEL, 2))  # cancelled before it starts: never runs
    parent.post_bytes(H.pack(TASK, 3) + b"\xc1")  # does not decode
    parent.post_bytes(H.pack(TASK, 4) + msgpack.packb("fail"))
    parent.post_bytes(H.pack(TASK, 5) + msgpack.packb(2**62))
    parent.post_bytes(H.pack(TASK, 6) + msgpack.packb(2**63))  # 2**64: cannot be encoded
    parent.post_bytes(b"\x7f not ours")  # ignored
    release.set()
    got = answers(parent, 6)
    assert got[0] == (REPLY, 1, msgpack.packb("waited"))
    assert got[1] == (CANCELLED, 2, b"")
    assert got[2][:2] == (BAD_REQUEST, 3) and b"reserved" in got[2][2]
    assert got[3] == (FAILED, 4, b"ValueError: told to fail")
    assert got[4] == (REPLY, 5, msgpack.packb(2**63))
    assert got[5][:2] == (FAILED, 6) and got[5][2].startswith(b"cannot encode the reply")
    parent.close()
    worker.join(5)
    assert not worker.is_alive(), "serve returns when the parent is gone"


def test_a_failing_initializer_tells_the_pool_why():
    child, parent = fake_parent()

    def init():
        raise RuntimeError("no model")

    with pytest.raises(InitError, match="no model"):
        serve(lambda job: job, init=init, port=child)
    assert parent.recv().bytes == H.pack(INIT_FAILED, 0) + b"RuntimeError: no model"


def test_a_supervised_child_attaches_and_answers_pings_and_probes_from_a_thread():
    child, parent = fake_parent()
    control_child, control_parent = MessageChannel()
    parent.post_message(
        {"magic": "utility-process-supervisor", "version": 1, "restarts": 2},
        ports=[control_child],
    )
    supervised = attach(child, probe=lambda: (_ for _ in ()).throw(OSError("disk full")))
    assert supervised.restarts == 2
    assert control_parent.recv().data == {"Attached": {"answers": True}}
    supervised.ready()
    assert control_parent.recv().data == "Ready"
    control_parent.post_message({"Ping": 7})
    assert control_parent.recv().data == {"Pong": 7}
    control_parent.post_message({"Probe": 8})
    assert control_parent.recv().data == {"Probe": [8, {"Err": "disk full"}]}
    control_parent.post_message({"Unknown": 1})  # a newer supervisor's request: silence
    control_parent.post_message({"Ping": 9})
    assert control_parent.recv().data == {"Pong": 9}


def test_a_first_message_that_is_not_the_supervisors_is_handed_back():
    child, parent = fake_parent()
    parent.post_message({"magic": "someone else"})
    with pytest.raises(NotSupervisedError) as caught:
        attach(child)
    assert caught.value.first.data == {"magic": "someone else"}


def test_a_panic_report_is_the_documented_map_and_is_cut_to_fit():
    frame = wire.encode_panic("ValueError: x", "a.py", 3, 5, "MainThread", 1000)
    assert frame[4] == wire.KIND_PANIC
    assert msgpack.unpackb(frame[5:]) == {
        "message": "ValueError: x", "file": "a.py", "line": 3, "column": 5, "thread": "MainThread",
    }
    long = wire.encode_panic("x" * 10_000, "a.py", 1, 1, None, 200)
    assert len(long) - 4 <= 200
