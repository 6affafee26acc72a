"""Python children for ``utility-process``: talk to a Rust parent over the parent port.

>>> from utility_process import parent_port          # doctest: +SKIP
>>> port = parent_port()                              # doctest: +SKIP
>>> for message in port:                              # doctest: +SKIP
...     port.post_message(message.data)

The wire protocol is ``docs/PROTOCOL.md`` in the repository; the value mapping between
Python and Rust is its section 6 (and :mod:`utility_process.msgpack`).
"""

from .child import parent_port
from .errors import (
    ClosedError,
    DecodeError,
    EncodeError,
    MessageTooLargeError,
    NotAUtilityProcessError,
    ProtocolError,
    UtilityProcessError,
)
from .msgpack import Ext
from .port import Message, MessageChannel, MessagePort, ParentPort
from .shm import SharedBuffer

__all__ = [
    "parent_port",
    "ParentPort",
    "MessagePort",
    "MessageChannel",
    "Message",
    "SharedBuffer",
    "Ext",
    "UtilityProcessError",
    "NotAUtilityProcessError",
    "ProtocolError",
    "MessageTooLargeError",
    "ClosedError",
    "EncodeError",
    "DecodeError",
]
__version__ = "0.1.0"
