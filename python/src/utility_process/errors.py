"""The exceptions of the package, one class per thing that can go wrong."""

from __future__ import annotations


class UtilityProcessError(Exception):
    """The base class of every error this package raises."""


class NotAUtilityProcessError(UtilityProcessError):
    """The program was not started by ``utility_process::fork`` (or the parent's ``HELLO`` is
    missing or wrong): there is no parent port to talk to."""


class ProtocolError(UtilityProcessError):
    """The peer sent bytes or descriptors that break ``docs/PROTOCOL.md``. The port has been
    closed; nothing more is read from it."""


class MessageTooLargeError(UtilityProcessError, ValueError):
    """A message is larger than the port's message limit (64 MiB unless the parent chose
    another). Nothing was sent; the port stays usable."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"a message of {size} bytes is over the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class ClosedError(UtilityProcessError):
    """The port is closed: this side closed it, sent it away, or the other side is gone."""


class EncodeError(UtilityProcessError, TypeError):
    """A value cannot be written as MessagePack (an unsupported type, an integer outside
    -2**63 .. 2**64-1, nesting deeper than 256 levels, a cycle)."""


class DecodeError(UtilityProcessError, ValueError):
    """A payload is not exactly one MessagePack value this package can read. The receiver's
    error, not a protocol violation: the port stays usable."""
