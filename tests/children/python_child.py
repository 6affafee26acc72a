#!/usr/bin/env python3
"""A Python utility process built on the `utility_process` package (python/src), its
behaviour chosen by argv[1]:

  reencode    decode every message as MessagePack and post the value back (a Python round
              trip of every kind of value); raw bytes that are not MessagePack come back as
              they are
  values      post the values of `VALUES` (what Python writes), then echo as `reencode`
  ports       echo on every port that arrives, on the parent port or on such a port
              ("ported" on the parent port for each port received there)
  raise       raise ValueError("boom from python") in boom(), uncaught
  exit N      exit with code N after the HELLO
  stdio       write a line to stdout and one to stderr, then exit 0
  hostile K   after the HELLO, write a bad frame of kind K (huge, zero, kind, hello, cut)
  pool        a pool worker (`serve`): {"Double": n} -> 2n, "Crash" -> os._exit(3) at once,
              {"Fail": words} -> raises, {"Sleep": ms} -> 0 after ms
  supervised  attach, ready, then: a number is answered with number + 1, "crash" exits 3
"""

import os
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python", "src"))

from utility_process import DecodeError, MessagePort, parent_port  # noqa: E402



def boom():
    raise ValueError("boom from python")


VALUES = [
    # Typed on the Rust side as `FromPython` (tests/integration/python.rs).
    {
        "u8": 255,
        "u16": 65535,
        "u32": 2**32 - 1,
        "u64": 2**64 - 1,
        "i8": -128,
        "i16": -32768,
        "i32": -(2**31),
        "i64": -(2**63),
        "f32": 1.5,
        "f64": 0.1,
        "int_as_f64": 3,
        "flag": True,
        "text": "héllo",
        "ch": "é",
        "bytes": b"\x00\x01\xff",
        "list_of_u8": [1, 2, 3],
        "none": None,
        "some": 7,
        "unit": None,
        "tuple": [1, "two"],
        "unit_struct": [],
        "newtype": 5,
        "unit_variant": "Plain",
        "newtype_variant": {"Wrapped": 9},
        "tuple_variant": {"Pair": [1, 2]},
        "struct_variant": {"Named": {"x": 1, "y": -1}},
        "map": {"a": 1, "b": 2},
        "int_keys": {1: "one", 2**64 - 1: "max"},
        "nested": [[], [True, None, False]],
        "u128": (2**100).to_bytes(16, "big"),
    },
]


def reencode(port: MessagePort) -> None:
    for message in port:
        try:
            value = message.data
        except DecodeError:
            port.post_bytes(message.bytes)
            continue
        port.post_message(value)


def echo_arrivals(port: MessagePort) -> None:
    """Echoes what arrives on `port`, and does the same on the ports that come with it."""
    for message in port:
        for arrived in message.ports:
            threading.Thread(target=echo_arrivals, args=(arrived,), daemon=True).start()
        if not message.ports:
            port.post_bytes(message.bytes)


def main() -> int:
    mode = sys.argv[1] if len(sys.argv) > 1 else "reencode"
    if mode == "pool":
        from utility_process.pool import serve

        def handler(job):
            if job == "Crash":
                os._exit(3)
            (name, arg), = job.items()
            if name == "Double":
                return arg * 2
            if name == "Sleep":
                time.sleep(arg / 1000)
                return 0
            raise ValueError(arg)

        serve(handler)
        return 0
    port = parent_port()
    if mode == "reencode":
        reencode(port)
    elif mode == "values":
        for value in VALUES:
            port.post_message(value)
        reencode(port)
    elif mode == "ports":
        for message in port:
            for arrived in message.ports:
                threading.Thread(target=echo_arrivals, args=(arrived,), daemon=True).start()
                port.post_message("ported")
    elif mode == "raise":
        boom()
    elif mode == "exit":
        return int(sys.argv[2])
    elif mode == "stdio":
        print("to stdout from python", flush=True)
        print("to stderr from python", file=sys.stderr, flush=True)
    elif mode == "hostile":
        bad = {
            "huge": struct.pack("<I", 0xFFFFFFFF),
            "zero": struct.pack("<I", 0),
            "kind": struct.pack("<IB", 1, 0x7F),
            "hello": struct.pack("<IB", 13, 0x01) + b"UPRC\x01\x00\x00\x00\x00\x10\x00\x04",
        }[sys.argv[2]]
        os.write(3, bad)
        time.sleep(60)
    elif mode == "supervised":
        from utility_process.supervisor import attach

        supervised = attach(port)
        supervised.ready()
        for message in port:
            value = message.data
            if value == "crash":
                os._exit(3)
            port.post_message(value + 1)
    else:
        print(f"python_child.py: unknown mode {mode!r}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
