"""MessagePack, as ``rmp-serde`` on the Rust side writes and reads it: no dependencies.

The value mapping (``docs/PROTOCOL.md``, section 6) in short:

========================  ====================================  ===========================
Python                    MessagePack written                   read back as
========================  ====================================  ===========================
``None``                  nil                                   ``None``
``bool``                  true / false                          ``bool``
``int``                   the smallest int format that holds    ``int`` (exact, 64-bit too)
                          it; -2**63 .. 2**64-1, else an error
``float``                 float 64 (never float 32)             ``float`` (float 32 too)
``str``                   str (UTF-8)                           ``str``
``bytes``, ``bytearray``, bin                                   ``bytes``
``memoryview``
``list``, ``tuple``       array                                 ``list``
``dict``                  map (any keys)                        ``dict`` (array keys become
                                                                tuples)
a dataclass instance      map from field name to value          ``dict``
:class:`Ext`              ext                                   :class:`Ext`
========================  ====================================  ===========================

Decoding never trusts a length: a string, binary or ext longer than the bytes left, or an
array or map announcing more elements than bytes left, is refused before anything is
allocated for it. Arrays, maps and exts nest at most :data:`MAX_DEPTH` levels, counted as the
Rust decoder counts them (``[[None]]`` is 2 levels, an ext is one level of its own).
"""

from __future__ import annotations

import dataclasses
import struct
from typing import Any, NamedTuple

from .errors import DecodeError, EncodeError

__all__ = ["MAX_DEPTH", "Ext", "packb", "unpackb"]

#: How deeply arrays, maps and exts may nest, as in the Rust decoder: this many levels
#: decode, one more is a :class:`DecodeError` (and refused by :func:`packb` too).
MAX_DEPTH = 256


class Ext(NamedTuple):
    """A MessagePack extension value: a type code (-128..127) and its bytes. Timestamps
    (type -1) are ext values too; they are handed over as they are."""

    code: int
    data: bytes


_B = struct.Struct(">B")
_H = struct.Struct(">H")
_I = struct.Struct(">I")
_Q = struct.Struct(">Q")
_b = struct.Struct(">b")
_h = struct.Struct(">h")
_i = struct.Struct(">i")
_q = struct.Struct(">q")
_f = struct.Struct(">f")
_d = struct.Struct(">d")


# ---- encoding -------------------------------------------------------------------------------


def packb(value: Any) -> bytes:
    """The MessagePack encoding of ``value``.

    Raises :class:`EncodeError` for a type without a mapping, an integer outside
    ``-2**63 .. 2**64 - 1``, a string with lone surrogates, or nesting deeper than
    :data:`MAX_DEPTH` (a cycle included).
    """
    out = bytearray()
    _pack(out, value, 0)
    return bytes(out)


def _pack(out: bytearray, value: Any, depth: int) -> None:
    if value is None:
        out.append(0xC0)
    elif value is True:
        out.append(0xC3)
    elif value is False:
        out.append(0xC2)
    elif isinstance(value, int):
        _pack_int(out, value)
    elif isinstance(value, float):
        out.append(0xCB)
        out += _d.pack(value)
    elif isinstance(value, str):
        try:
            data = value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise EncodeError(f"a string that is not valid Unicode: {e}") from None
        n = len(data)
        if n < 32:
            out.append(0xA0 | n)
        elif n < 0x100:
            out.append(0xD9)
            out.append(n)
        elif n < 0x10000:
            out.append(0xDA)
            out += _H.pack(n)
        elif n < 0x1_0000_0000:
            out.append(0xDB)
            out += _I.pack(n)
        else:
            raise EncodeError(f"a string of {n} bytes (MessagePack allows 2**32 - 1)")
        out += data
    elif isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        n = len(data)
        if n < 0x100:
            out.append(0xC4)
            out.append(n)
        elif n < 0x10000:
            out.append(0xC5)
            out += _H.pack(n)
        elif n < 0x1_0000_0000:
            out.append(0xC6)
            out += _I.pack(n)
        else:
            raise EncodeError(f"a binary of {n} bytes (MessagePack allows 2**32 - 1)")
        out += data
    elif isinstance(value, Ext):
        _pack_ext(out, value, depth)
    elif isinstance(value, (list, tuple)):
        depth = _deeper(depth)
        _pack_len(out, len(value), 0x90, 0xDC, 0xDD, "an array")
        for item in value:
            _pack(out, item, depth)
    elif isinstance(value, dict):
        depth = _deeper(depth)
        _pack_len(out, len(value), 0x80, 0xDE, 0xDF, "a map")
        for key, item in value.items():
            _pack(out, key, depth)
            _pack(out, item, depth)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = dataclasses.fields(value)
        _pack(out, {f.name: getattr(value, f.name) for f in fields}, depth)
    else:
        raise EncodeError(
            f"cannot encode a value of type {type(value).__name__} as MessagePack "
            "(None, bool, int, float, str, bytes, list, tuple, dict, dataclasses and Ext can)"
        )


def _deeper(depth: int) -> int:
    if depth >= MAX_DEPTH:
        raise EncodeError(f"the value nests deeper than {MAX_DEPTH} levels (or holds a cycle)")
    return depth + 1


def _pack_len(out: bytearray, n: int, fix: int, m16: int, m32: int, what: str) -> None:
    if n < 16:
        out.append(fix | n)
    elif n < 0x10000:
        out.append(m16)
        out += _H.pack(n)
    elif n < 0x1_0000_0000:
        out.append(m32)
        out += _I.pack(n)
    else:
        raise EncodeError(f"{what} of {n} elements (MessagePack allows 2**32 - 1)")


def _pack_int(out: bytearray, n: int) -> None:
    if n >= 0:
        if n < 0x80:
            out.append(n)
        elif n < 0x100:
            out.append(0xCC)
            out.append(n)
        elif n < 0x10000:
            out.append(0xCD)
            out += _H.pack(n)
        elif n < 0x1_0000_0000:
            out.append(0xCE)
            out += _I.pack(n)
        elif n < 0x1_0000_0000_0000_0000:
            out.append(0xCF)
            out += _Q.pack(n)
        else:
            raise EncodeError(f"the integer {n} does not fit 64 bits (largest: 2**64 - 1)")
    elif n >= -32:
        out.append(n & 0xFF)
    elif n >= -0x80:
        out.append(0xD0)
        out += _b.pack(n)
    elif n >= -0x8000:
        out.append(0xD1)
        out += _h.pack(n)
    elif n >= -0x8000_0000:
        out.append(0xD2)
        out += _i.pack(n)
    elif n >= -0x8000_0000_0000_0000:
        out.append(0xD3)
        out += _q.pack(n)
    else:
        raise EncodeError(f"the integer {n} does not fit 64 bits (smallest: -2**63)")


def _pack_ext(out: bytearray, ext: Ext, depth: int) -> None:
    _deeper(depth)
    code, data = ext.code, bytes(ext.data)
    if not -128 <= code <= 127:
        raise EncodeError(f"an ext type code of {code} (it must be in -128..127)")
    n = len(data)
    fixed = {1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}.get(n)
    if fixed is not None:
        out.append(fixed)
    elif n < 0x100:
        out.append(0xC7)
        out.append(n)
    elif n < 0x10000:
        out.append(0xC8)
        out += _H.pack(n)
    elif n < 0x1_0000_0000:
        out.append(0xC9)
        out += _I.pack(n)
    else:
        raise EncodeError(f"an ext of {n} bytes (MessagePack allows 2**32 - 1)")
    out += _b.pack(code)
    out += data


# ---- decoding -------------------------------------------------------------------------------


def unpackb(data: bytes | bytearray | memoryview) -> Any:
    """The one MessagePack value ``data`` holds.

    Raises :class:`DecodeError` when ``data`` is not exactly one value: cut short, bytes
    after the value, the reserved marker 0xc1, invalid UTF-8 in a string, a map key that is
    a map, or nesting deeper than :data:`MAX_DEPTH`.
    """
    reader = _Reader(memoryview(data).cast("B") if not isinstance(data, bytes) else data)
    value = reader.value(0)
    left = len(reader.data) - reader.pos
    if left:
        raise DecodeError(f"{left} byte(s) after the MessagePack value")
    return value


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes | memoryview) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise DecodeError(
                f"the value is cut short: {n} byte(s) needed at offset {self.pos}, "
                f"{len(self.data) - self.pos} left"
            )
        chunk = bytes(self.data[self.pos : end])
        self.pos = end
        return chunk

    def unpack(self, s: struct.Struct) -> Any:
        end = self.pos + s.size
        if end > len(self.data):
            raise DecodeError(f"the value is cut short at offset {self.pos}")
        (v,) = s.unpack_from(self.data, self.pos)
        self.pos = end
        return v

    def count(self, n: int, per: int) -> int:
        # Each element takes at least one byte: refuse a count the bytes left cannot hold.
        if n * per > len(self.data) - self.pos:
            raise DecodeError(
                f"the value is cut short: a collection announces {n} element(s) with only "
                f"{len(self.data) - self.pos} byte(s) left"
            )
        return n

    def value(self, depth: int) -> Any:
        if self.pos >= len(self.data):
            raise DecodeError("the value is cut short: no marker byte")
        m = self.data[self.pos]
        self.pos += 1
        if m <= 0x7F:
            return m
        if m >= 0xE0:
            return m - 0x100
        if 0xA0 <= m <= 0xBF:
            return self.text(m & 0x1F)
        if 0x90 <= m <= 0x9F:
            return self.array(m & 0x0F, depth)
        if 0x80 <= m <= 0x8F:
            return self.map(m & 0x0F, depth)
        if m == 0xC0:
            return None
        if m == 0xC2:
            return False
        if m == 0xC3:
            return True
        if m == 0xC4:
            return self.take(self.unpack(_B))
        if m == 0xC5:
            return self.take(self.unpack(_H))
        if m == 0xC6:
            return self.take(self.unpack(_I))
        if m in (0xC7, 0xC8, 0xC9):
            n = self.unpack((_B, _H, _I)[m - 0xC7])
            return self.ext(n, depth)
        if m == 0xCA:
            return float(self.unpack(_f))
        if m == 0xCB:
            return self.unpack(_d)
        if 0xCC <= m <= 0xCF:
            return self.unpack((_B, _H, _I, _Q)[m - 0xCC])
        if 0xD0 <= m <= 0xD3:
            return self.unpack((_b, _h, _i, _q)[m - 0xD0])
        if 0xD4 <= m <= 0xD8:
            return self.ext(1 << (m - 0xD4), depth)
        if m == 0xD9:
            return self.text(self.unpack(_B))
        if m == 0xDA:
            return self.text(self.unpack(_H))
        if m == 0xDB:
            return self.text(self.unpack(_I))
        if m == 0xDC:
            return self.array(self.unpack(_H), depth)
        if m == 0xDD:
            return self.array(self.unpack(_I), depth)
        if m == 0xDE:
            return self.map(self.unpack(_H), depth)
        if m == 0xDF:
            return self.map(self.unpack(_I), depth)
        raise DecodeError(f"the reserved marker 0x{m:02x} at offset {self.pos - 1}")

    def enter(self, depth: int) -> int:
        if depth >= MAX_DEPTH:
            raise DecodeError(f"the value nests deeper than {MAX_DEPTH} levels")
        return depth + 1

    def text(self, n: int) -> str:
        raw = self.take(n)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DecodeError(f"a string that is not valid UTF-8: {e}") from None

    def ext(self, n: int, depth: int) -> Ext:
        self.enter(depth)
        code = self.unpack(_b)
        return Ext(code, self.take(n))

    def array(self, n: int, depth: int) -> list[Any]:
        depth = self.enter(depth)
        self.count(n, 1)
        return [self.value(depth) for _ in range(n)]

    def map(self, n: int, depth: int) -> dict[Any, Any]:
        depth = self.enter(depth)
        self.count(n, 2)
        out: dict[Any, Any] = {}
        for _ in range(n):
            key = _hashable(self.value(depth))
            out[key] = self.value(depth)
        return out


def _hashable(key: Any) -> Any:
    if isinstance(key, list):
        return tuple(_hashable(k) for k in key)
    if isinstance(key, dict):
        raise DecodeError("a map key that is itself a map (Python cannot hash it)")
    return key

