"""Shared buffers: sealed memfds mapped into each process that holds one (section 3.2)."""

from __future__ import annotations

import fcntl
import mmap
import os

from . import wire
from .errors import ProtocolError

_SIZE_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW


class SharedBuffer:
    """A block of memory shared with whoever else holds it, without copying.

    :attr:`view` is a ``memoryview`` of it, read-only once the buffer is frozen (sealed
    against writes for good, in every process). Receive one from :attr:`Message.buffers`;
    make one with :meth:`create` and send it with ``post_message(..., buffers=[buf])`` (the
    buffer stays usable here: it is shared memory).
    """

    def __init__(self, fd: int, length: int, read_only: bool) -> None:
        self._fd = fd
        self._len = length
        self._read_only = read_only
        self._map: mmap.mmap | None = None
        self._map_it()

    def _map_it(self) -> None:
        if self._len == 0:
            self._map = None
            self.view = memoryview(b"")
            return
        prot = mmap.PROT_READ if self._read_only else mmap.PROT_READ | mmap.PROT_WRITE
        self._map = mmap.mmap(self._fd, self._len, flags=mmap.MAP_SHARED, prot=prot)
        self.view = memoryview(self._map)
        if self._read_only:
            self.view = self.view.toreadonly()

    @classmethod
    def create(cls, length: int) -> "SharedBuffer":
        """A new zeroed, writable buffer of ``length`` bytes (a memfd sealed against
        resizing)."""
        fd = os.memfd_create("utility-process", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(fd, length)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SIZE_SEALS)
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, length, read_only=False)

    @classmethod
    def receive(cls, fd: int, length: int, read_only: bool) -> "SharedBuffer":
        """Checks a received descriptor and maps it; raises :class:`ProtocolError` (after
        closing ``fd``) when it is not what the attachment says."""
        try:
            try:
                seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
            except OSError:
                raise ProtocolError("a shared buffer that is not a memfd") from None
            if length > wire.MAX_RECEIVED_BUFFER:
                raise ProtocolError("a shared buffer larger than 1 GiB")
            if os.fstat(fd).st_size != length:
                raise ProtocolError("a shared buffer whose size is not the announced one")
            if seals & _SIZE_SEALS != _SIZE_SEALS:
                raise ProtocolError("a shared buffer whose size is not sealed")
            if read_only and not seals & fcntl.F_SEAL_WRITE:
                raise ProtocolError("a read-only shared buffer that is not sealed against writes")
            return cls(fd, length, read_only)
        except BaseException:
            os.close(fd)
            raise

    def __len__(self) -> int:
        return self._len

    @property
    def read_only(self) -> bool:
        """Whether the buffer is sealed against writes."""
        return self._read_only

    def fileno(self) -> int:
        """The memfd."""
        return self._fd

    def freeze(self) -> None:
        """Seals the buffer against writes, for good and in every process, and maps it
        read-only. Every writable view of it (here or in another process) must be gone first,
        or the kernel refuses (``OSError`` EBUSY)."""
        if self._read_only:
            return
        self.view.release()
        if self._map is not None:
            self._map.close()
        try:
            fcntl.fcntl(self._fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE)
        except OSError:
            self._map_it()
            raise
        self._read_only = True
        self._map_it()

    def close(self) -> None:
        """Unmaps the buffer and closes its descriptor (views of it must be released)."""
        if self._fd < 0:
            return
        self.view.release()
        if self._map is not None:
            self._map.close()
        os.close(self._fd)
        self._fd = -1

    def __repr__(self) -> str:
        return f"SharedBuffer(len={self._len}, read_only={self._read_only})"
