"""The Python child of the benchmark's `lang.python.*` rows (benches/src/lang.rs runs it).

A worker on the `utility_process` package, forked by the Rust parent with
`fork("lang_worker.py", [ROLE])` (python3, `PYTHONPATH=<repo>/python/src`), reading the
parent port with the blocking `recv`, as a plain Python worker would:

  echo   posts every message's data back (a 64-character str: decoded, re-encoded)
  sink   reads an order (N), counts the next N messages (64-character strs) and their
         characters, and posts the total once it has all N; again for the next order

Both end when the parent is gone (`recv` returns None); the parent ends them with kill().
"""

import sys

from utility_process import parent_port


def echo(port):
    for message in port:
        port.post_message(message.data)


def sink(port):
    while (order := port.recv()) is not None:
        want = order.data
        total = 0
        for _ in range(want):
            message = port.recv()
            if message is None:
                return
            total += len(message.data)
        port.post_message(total)


def main():
    roles = {"echo": echo, "sink": sink}
    role = sys.argv[1] if len(sys.argv) > 1 else ""
    if role not in roles:
        sys.exit(f"lang_worker.py: unknown role {role!r}")
    roles[role](parent_port())


if __name__ == "__main__":
    main()
