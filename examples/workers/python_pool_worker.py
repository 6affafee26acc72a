"""A pool worker in Python: squares numbers, and dies on 13 (to show a crash)."""

import os

from utility_process.pool import serve


def square(n: int) -> int:
    if n == 13:
        os._exit(3)  # the worker dies under its task: only this task fails
    return n * n


serve(square)
