"""The Python peer of the utility-process benchmark (benches/src/lang.rs runs it).

What a Python program uses to talk to a process of its own is `multiprocessing`: a
`Process` and a `Pipe()` (a socketpair; `send` pickles, `recv` unpickles, each message
length-prefixed). To measure that honestly both ends are Python, so this one script is the
measuring parent and starts the child itself (multiprocessing's default start method):

  python3 pipe.py MODE SAMPLES ITERS   prints a JSON array of SAMPLES numbers on stdout

Modes (each runs one unrecorded warm-up sample first):

  rtt     seconds per round trip: send a 64-character str, wait for the child's echo,
          ITERS times per sample
  stream  messages per second: send an order (ITERS), then ITERS 64-character strs as fast
          as `send` returns; the child counts them and their characters and answers once it
          has all of them; timed from the order to the answer

The child ends when the parent closes its end (`recv` raises EOFError).
"""

import json
import multiprocessing
import sys
import time

PAYLOAD = "x" * 64


def echo(conn, parent_end):
    parent_end.close()  # a forked child holds a copy: without this it never sees EOF
    try:
        while True:
            conn.send(conn.recv())
    except EOFError:
        pass


def sink(conn, parent_end):
    parent_end.close()
    try:
        while True:
            want = conn.recv()
            total = 0
            for _ in range(want):
                total += len(conn.recv())
            conn.send(total)
    except EOFError:
        pass


def rtt(conn, iters):
    started = time.perf_counter()
    for _ in range(iters):
        conn.send(PAYLOAD)
        if len(conn.recv()) != len(PAYLOAD):
            raise RuntimeError("short echo")
    return (time.perf_counter() - started) / iters


def stream(conn, iters):
    started = time.perf_counter()
    conn.send(iters)
    for _ in range(iters):
        conn.send(PAYLOAD)
    total = conn.recv()
    elapsed = time.perf_counter() - started
    if total != iters * len(PAYLOAD):
        raise RuntimeError(f"the child counted {total} characters")
    return iters / elapsed


def main():
    modes = {"rtt": (rtt, echo), "stream": (stream, sink)}
    try:
        mode, samples, iters = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
        measure, role = modes[mode]
    except (IndexError, KeyError, ValueError):
        sys.exit("usage: python3 pipe.py rtt|stream SAMPLES ITERS")
    ours, theirs = multiprocessing.Pipe()
    child = multiprocessing.Process(target=role, args=(theirs, ours), daemon=True)
    child.start()
    theirs.close()
    measure(ours, iters)
    out = [measure(ours, iters) for _ in range(samples)]
    ours.close()
    child.join()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
