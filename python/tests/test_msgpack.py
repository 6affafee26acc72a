"""The codec: every mapping row, exact integers, and hostile inputs that must fail fast."""

import math
import struct
import time
from dataclasses import dataclass

import pytest

from utility_process.errors import DecodeError, EncodeError
from utility_process.msgpack import MAX_DEPTH, Ext, packb, unpackb


@pytest.mark.parametrize(
    "value, encoded",
    [
        (None, b"\xc0"),
        (False, b"\xc2"),
        (True, b"\xc3"),
        (0, b"\x00"),
        (127, b"\x7f"),
        (128, b"\xcc\x80"),
        (255, b"\xcc\xff"),
        (256, b"\xcd\x01\x00"),
        (65535, b"\xcd\xff\xff"),
        (65536, b"\xce\x00\x01\x00\x00"),
        (2**32 - 1, b"\xce\xff\xff\xff\xff"),
        (2**32, b"\xcf\x00\x00\x00\x01\x00\x00\x00\x00"),
        (2**64 - 1, b"\xcf" + b"\xff" * 8),
        (-1, b"\xff"),
        (-32, b"\xe0"),
        (-33, b"\xd0\xdf"),
        (-128, b"\xd0\x80"),
        (-129, b"\xd1\xff\x7f"),
        (-32768, b"\xd1\x80\x00"),
        (-32769, b"\xd2\xff\xff\x7f\xff"),
        (-(2**31), b"\xd2\x80\x00\x00\x00"),
        (-(2**31) - 1, b"\xd3\xff\xff\xff\xff\x7f\xff\xff\xff"),
        (-(2**63), b"\xd3\x80" + b"\x00" * 7),
        (1.5, b"\xcb" + struct.pack(">d", 1.5)),
        ("", b"\xa0"),
        ("hi", b"\xa2hi"),
        ("é", b"\xa2\xc3\xa9"),
        (b"", b"\xc4\x00"),
        (b"\x00\xff", b"\xc4\x02\x00\xff"),
        ([], b"\x90"),
        ([1, [2]], b"\x92\x01\x91\x02"),
        ({}, b"\x80"),
        ({"a": None}, b"\x81\xa1a\xc0"),
        (Ext(5, b"\xaa"), b"\xd4\x05\xaa"),
        (Ext(-1, b"\x00" * 3), b"\xc7\x03\xff\x00\x00\x00"),
    ],
)
def test_each_value_has_the_rmp_serde_encoding_and_decodes_back(value, encoded):
    assert packb(value) == encoded
    assert unpackb(encoded) == value
    assert type(unpackb(encoded)) is type(value)


def test_integers_at_every_width_boundary_round_trip_exactly():
    for n in [2**k + d for k in (7, 8, 15, 16, 31, 32, 53, 63) for d in (-1, 0, 1)] + [2**64 - 1]:
        for v in (n, -n):
            if -(2**63) <= v < 2**64:
                back = unpackb(packb(v))
                assert back == v and isinstance(back, int), v


def test_integers_outside_64_bits_are_refused_not_written_as_floats():
    for n in (2**64, -(2**63) - 1, 10**30):
        with pytest.raises(EncodeError, match="64 bits"):
            packb(n)


def test_every_integer_marker_is_read_at_its_width():
    for encoded, value in [
        (b"\xcc\xff", 255), (b"\xcd\xff\xff", 65535), (b"\xce\xff\xff\xff\xff", 2**32 - 1),
        (b"\xcf\xff\xff\xff\xff\xff\xff\xff\xff", 2**64 - 1), (b"\xd0\x80", -128),
        (b"\xd1\x80\x00", -32768), (b"\xd2\x80\x00\x00\x00", -(2**31)),
        (b"\xd3\x80\x00\x00\x00\x00\x00\x00\x00", -(2**63)),
        (b"\xd3\x00\x00\x00\x00\x00\x00\x00\x05", 5),  # wide formats for small values too
    ]:
        assert unpackb(encoded) == value


def test_floats_are_written_as_float64_and_float32_is_read():
    assert packb(0.1)[0] == 0xCB
    assert unpackb(packb(0.1)) == 0.1
    assert unpackb(b"\xca" + struct.pack(">f", 1.5)) == 1.5
    assert math.isnan(unpackb(packb(float("nan"))))
    assert unpackb(packb(float("-inf"))) == float("-inf")


def test_tuples_bytearrays_and_memoryviews_encode_as_arrays_and_bin():
    assert unpackb(packb((1, "a"))) == [1, "a"]
    assert unpackb(packb(bytearray(b"ab"))) == b"ab"
    assert unpackb(packb(memoryview(b"ab"))) == b"ab"


def test_long_strings_binaries_arrays_and_maps_use_the_wide_formats():
    for n in (31, 32, 255, 256, 65535, 65536):
        assert unpackb(packb("x" * n)) == "x" * n
        assert unpackb(packb(b"x" * n)) == b"x" * n
    for n in (15, 16, 65535, 65536):
        assert unpackb(packb(list(range(n)))) == list(range(n))
        assert unpackb(packb({i: i for i in range(n)})) == {i: i for i in range(n)}


def test_dataclasses_encode_as_maps_by_field_name():
    @dataclass
    class Ping:
        seq: int
        body: str

    assert packb(Ping(1, "x")) == packb({"seq": 1, "body": "x"})


def test_maps_keep_non_string_keys_and_array_keys_become_tuples():
    assert unpackb(packb({1: "a", b"k": 2, None: 3})) == {1: "a", b"k": 2, None: 3}
    assert unpackb(b"\x81\x92\x01\x02\xc0") == {(1, 2): None}
    with pytest.raises(DecodeError, match="map key"):
        unpackb(b"\x81\x80\xc0")


def test_unsupported_types_name_themselves():
    with pytest.raises(EncodeError, match="set"):
        packb({1, 2})
    with pytest.raises(EncodeError, match="Unicode"):
        packb("\ud800")


def nested(depth: int, leaf: bytes = b"\xc0") -> bytes:
    """``depth`` levels, alternately one-element arrays and one-entry maps ``{nil: ...}``."""
    return b"".join(b"\x91" if i % 2 == 0 else b"\x81\xc0" for i in range(depth)) + leaf


def test_exactly_max_depth_levels_decode_and_one_more_fails_as_in_rust():
    for depth in (0, 1, MAX_DEPTH - 1, MAX_DEPTH):
        unpackb(nested(depth))
    for depth in (MAX_DEPTH + 1, 10 * MAX_DEPTH):
        with pytest.raises(DecodeError, match="deeper"):
            unpackb(nested(depth))
    ext = b"\xd4\x01\x00"
    unpackb(nested(MAX_DEPTH - 1, ext))
    with pytest.raises(DecodeError, match="deeper"):
        unpackb(nested(MAX_DEPTH, ext))


def test_a_million_nested_arrays_fail_without_a_recursion_error():
    with pytest.raises(DecodeError):
        unpackb(b"\x91" * 1_000_000)


def test_encoding_refuses_nesting_past_the_limit_and_cycles():
    value: list = []
    for _ in range(MAX_DEPTH):
        value = [value]
    with pytest.raises(EncodeError, match="deeper"):
        packb(value)
    cycle: list = []
    cycle.append(cycle)
    with pytest.raises(EncodeError, match="cycle"):
        packb(cycle)


@pytest.mark.parametrize(
    "hostile",
    [
        b"\xdd\xff\xff\xff\xff",  # an array of 4 billion elements, none there
        b"\xdf\xff\xff\xff\xff",  # a map of 4 billion entries
        b"\xc6\xff\xff\xff\xff",  # a 4 GiB binary
        b"\xdb\xff\xff\xff\xff",  # a 4 GiB string
        b"\xc9\xff\xff\xff\xff\x01",  # a 4 GiB ext
        b"\xdc\xff\xff" + b"\xc0" * 100,  # an array announcing more than is there
    ],
)
def test_huge_announced_lengths_fail_at_once_without_allocating(hostile):
    start = time.monotonic()
    with pytest.raises(DecodeError):
        unpackb(hostile)
    assert time.monotonic() - start < 0.5


@pytest.mark.parametrize("cut", [b"", b"\xcd\x01", b"\xa5abc", b"\x92\x01", b"\xcb\x00", b"\xd4\x01"])
def test_values_cut_short_are_errors(cut):
    with pytest.raises(DecodeError, match="cut short"):
        unpackb(cut)


def test_bytes_after_the_value_invalid_utf8_and_the_reserved_marker_are_errors():
    with pytest.raises(DecodeError, match="after"):
        unpackb(b"\xc0\xc0")
    with pytest.raises(DecodeError, match="UTF-8"):
        unpackb(b"\xa1\xff")
    with pytest.raises(DecodeError, match="reserved"):
        unpackb(b"\xc1")


def test_random_bytes_only_ever_decode_or_raise_decode_error():
    import random

    rng = random.Random(7)
    for _ in range(20_000):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 24)))
        try:
            unpackb(data)
        except DecodeError:
            pass
