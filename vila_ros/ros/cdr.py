"""sensor_msgs/Image and CompressedImage read straight from their serialized (CDR) bytes.

Why: rclpy's deserialization of a 1080p raw frame copies 6 MB into a Python message and holds the GIL ~1.6 ms,
also for the 9 frames in 10 that the clip-rate grid skips. A subscription with ``raw=True`` hands us the bytes;
``read_stamp`` decides from the first 12 bytes, and only a kept frame is parsed further, its pixels a zero-copy
view of those bytes. The objects returned look like the messages to `conversion.py` (same field names).

Layout (OMG CDR, as rmw implementations serialize ROS messages): a 4-byte encapsulation header (representation id,
then 2 option bytes), then the fields, each aligned to its own size counted from the end of that header.
Strings: uint32 length including a terminating NUL, the bytes, the NUL. Sequences: uint32 count, the elements.
Plain CDR2 lays these types out the same way (no field here is wider than 4 bytes); delimited or parameter-list
representations are refused. Every read is bounds-checked: malformed bytes raise `ImageDecodeError`.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

from vila_ros.ros.conversion import ImageDecodeError
from vila_ros.tasks import NANOSECONDS

# representation identifier -> byte order ("<" or ">"): CDR_BE, CDR_LE, PLAIN_CDR2_BE, PLAIN_CDR2_LE
_REPRESENTATIONS = {b"\x00\x00": ">", b"\x00\x01": "<", b"\x00\x06": ">", b"\x00\x07": "<"}
_HEADER = 4
_MAX_STRING = 1 << 16  # frame ids and encodings are short; a huge length is a corrupt message


@dataclass
class Stamp:
    sec: int = 0
    nanosec: int = 0


@dataclass
class Header:
    stamp: Stamp = field(default_factory=Stamp)
    frame_id: str = ""


@dataclass
class RawImage:
    """The fields of a sensor_msgs/Image; ``data`` is a read-only uint8 view of the serialized bytes."""

    header: Header
    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: np.ndarray


@dataclass
class RawCompressedImage:
    header: Header
    format: str
    data: np.ndarray


class _Reader:
    __slots__ = ("buf", "order", "pos")

    def __init__(self, buf: bytes | memoryview) -> None:
        if len(buf) < _HEADER:
            raise ImageDecodeError(f"serialized message of {len(buf)} bytes has no encapsulation header")
        order = _REPRESENTATIONS.get(bytes(buf[:2]))
        if order is None:
            raise ImageDecodeError(f"unsupported CDR representation 0x{bytes(buf[:2]).hex()}")
        self.buf, self.order, self.pos = buf, order, _HEADER

    def _take(self, size: int, align: int) -> int:
        start = self.pos + (-(self.pos - _HEADER) % align)
        end = start + size
        if end > len(self.buf):
            raise ImageDecodeError(f"serialized message truncated: {len(self.buf)} bytes, field ends at {end}")
        self.pos = end
        return start

    def uint32(self) -> int:
        return struct.unpack_from(self.order + "I", self.buf, self._take(4, 4))[0]

    def int32(self) -> int:
        return struct.unpack_from(self.order + "i", self.buf, self._take(4, 4))[0]

    def uint8(self) -> int:
        return self.buf[self._take(1, 1)]

    def string(self) -> str:
        length = self.uint32()
        if length > _MAX_STRING:
            raise ImageDecodeError(f"string of {length} bytes in a serialized image header")
        if length == 0:  # not what rmw writes, but an empty string all the same
            return ""
        start = self._take(length, 1)
        raw = bytes(self.buf[start:start + length])
        if raw[-1:] != b"\x00":
            raise ImageDecodeError("string in a serialized image is not NUL-terminated")
        try:  # up to the first NUL, as rclpy's own deserialization (C strings) reads it
            return raw[:raw.index(b"\x00")].decode("utf-8")
        except UnicodeDecodeError as error:
            raise ImageDecodeError(f"string in a serialized image is not UTF-8: {error}") from None

    def octets(self) -> np.ndarray:
        count = self.uint32()
        start = self._take(count, 1)
        return np.frombuffer(self.buf, np.uint8, count, start)  # a view: no copy of the pixels

    def header(self) -> Header:
        sec, nanosec = self.int32(), self.uint32()
        return Header(Stamp(sec, nanosec), self.string())


def read_stamp_ns(buf: bytes | memoryview) -> int:
    """The header stamp in nanoseconds, from the first 12 bytes alone (what decides whether a frame is kept)."""
    reader = _Reader(buf)
    sec, nanosec = reader.int32(), reader.uint32()
    return sec * NANOSECONDS + nanosec


def read_image(buf: bytes | memoryview) -> RawImage:
    reader = _Reader(buf)
    header = reader.header()
    height, width = reader.uint32(), reader.uint32()
    encoding = reader.string()
    is_bigendian = reader.uint8()
    step = reader.uint32()
    return RawImage(header, height, width, encoding, is_bigendian, step, reader.octets())


def read_compressed_image(buf: bytes | memoryview) -> RawCompressedImage:
    reader = _Reader(buf)
    header = reader.header()
    fmt = reader.string()
    return RawCompressedImage(header, fmt, reader.octets())
