"""Property-based tests (hypothesis) of camera message decoding: round trips over random layouts, and garbage in
never gives anything but `ImageDecodeError`."""
import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sensor_msgs.msg import CompressedImage, Image

from vila_ros.ros.conversion import (
    MAX_STAMP_NS,
    ImageDecodeError,
    compressed_to_rgb,
    image_to_rgb,
    rgb_to_compressed,
    rgb_to_image,
    stamp_to_ns,
)

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# encoding -> (channels, dtype, function from the message's pixels to the expected RGB)
ENCODINGS = {
    "rgb8": (3, np.uint8, lambda p: p),
    "bgr8": (3, np.uint8, lambda p: p[..., ::-1]),
    "8UC3": (3, np.uint8, lambda p: p[..., ::-1]),
    "rgba8": (4, np.uint8, lambda p: p[..., :3]),
    "bgra8": (4, np.uint8, lambda p: p[..., 2::-1]),
    "mono8": (1, np.uint8, lambda p: np.repeat(p, 3, axis=-1)),
    "8UC1": (1, np.uint8, lambda p: np.repeat(p, 3, axis=-1)),
}
SIXTEEN_BIT = {"mono16": 1, "16UC1": 1, "rgb16": 3, "bgr16": 3}

sizes = st.tuples(st.integers(1, 24), st.integers(1, 24))


def raw_message(pixels: np.ndarray, encoding: str, pad: int, bigendian: bool, drop_last_pad: bool = False) -> Image:
    height = pixels.shape[0]
    if pixels.dtype == np.uint16:
        rows = pixels.astype(">u2" if bigendian else "<u2").view(np.uint8).reshape(height, -1)
    else:
        rows = pixels.reshape(height, -1)
    padded = np.concatenate([rows, np.full((height, pad), 0xA5, np.uint8)], axis=1)
    data = padded.tobytes()
    if drop_last_pad and pad:
        data = data[:-pad]  # some drivers omit the last row's padding
    return Image(height=height, width=pixels.shape[1], encoding=encoding, is_bigendian=bigendian,
                 step=padded.shape[1], data=data)


@SETTINGS
@given(size=sizes, encoding=st.sampled_from(sorted(ENCODINGS)), pad=st.integers(0, 9), bigendian=st.booleans(),
       drop_last_pad=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_8bit_encodings_decode_exactly_over_random_layouts(size, encoding, pad, bigendian, drop_last_pad, seed):
    channels, dtype, expect = ENCODINGS[encoding]
    pixels = np.random.default_rng(seed).integers(0, 256, size + (channels,), dtype=np.uint8)
    rgb = image_to_rgb(raw_message(pixels, encoding, pad, bigendian, drop_last_pad))  # endianness: no-op at 8 bits
    assert rgb.dtype == np.uint8 and rgb.shape == size + (3,)
    assert np.array_equal(rgb, expect(pixels))


@SETTINGS
@given(size=sizes, encoding=st.sampled_from(sorted(SIXTEEN_BIT)), pad=st.integers(0, 9), seed=st.integers(0, 2**32 - 1))
def test_16bit_big_and_little_endian_decode_identically(size, encoding, pad, seed):
    pixels = np.random.default_rng(seed).integers(0, 2**16, size + (SIXTEEN_BIT[encoding],), dtype=np.uint16)
    little = image_to_rgb(raw_message(pixels, encoding, pad, False))
    big = image_to_rgb(raw_message(pixels, encoding, pad, True))
    assert little.shape == size + (3,) and little.dtype == np.uint8
    assert np.array_equal(little, big)
    if pixels.max() > pixels.min():  # stretched over its own range
        assert little.min() == 0 and little.max() == 255


@SETTINGS
@given(size=st.tuples(st.integers(1, 16), st.integers(1, 12).map(lambda w: 2 * w)),
       encoding=st.sampled_from(["yuv422", "uyvy", "yuv422_yuy2", "yuyv"]), pad=st.integers(0, 5))
def test_yuv_decodes_to_rgb_of_the_right_shape(size, encoding, pad):
    pixels = np.full(size + (2,), 128, np.uint8)
    rgb = image_to_rgb(raw_message(pixels, encoding, pad, False))
    assert rgb.shape == size + (3,) and rgb.dtype == np.uint8


@SETTINGS
@given(size=sizes, seed=st.integers(0, 2**32 - 1), encoding=st.sampled_from(["rgb8", "bgr8"]),
       stamp=st.integers(0, MAX_STAMP_NS), frame_id=st.text(max_size=20))
def test_rgb_to_image_round_trip(size, seed, encoding, stamp, frame_id):
    rgb = np.random.default_rng(seed).integers(0, 256, size + (3,), dtype=np.uint8)
    msg = rgb_to_image(rgb, stamp, frame_id, encoding)
    assert stamp_to_ns(msg.header.stamp) == stamp and msg.header.frame_id == frame_id
    assert np.array_equal(image_to_rgb(msg), rgb)


@settings(max_examples=40, deadline=None)
@given(size=st.tuples(st.integers(8, 64), st.integers(8, 64)), level=st.integers(0, 255))
def test_jpeg_and_png_round_trip(size, level):
    flat = np.full(size + (3,), level, np.uint8)  # flat: JPEG is near-lossless on it
    jpeg = compressed_to_rgb(rgb_to_compressed(flat, 0, "cam", quality=95))
    assert jpeg.shape == flat.shape and np.abs(jpeg.astype(int) - level).max() <= 3
    ok, png = cv2.imencode(".png", flat)
    assert ok
    assert np.array_equal(compressed_to_rgb(CompressedImage(format="png", data=png.tobytes())), flat)


def _decode_raw_or_error(msg: Image) -> None:
    try:
        rgb = image_to_rgb(msg)
    except ImageDecodeError as error:
        assert str(error)
        return
    assert rgb.ndim == 3 and rgb.shape == (msg.height, msg.width, 3) and rgb.dtype == np.uint8


ALL_ENCODINGS = sorted(ENCODINGS) + sorted(SIXTEEN_BIT) + ["yuv422", "uyvy", "yuyv", "yuv422_yuy2"]


@SETTINGS
@given(height=st.integers(0, 40), width=st.integers(0, 40), step=st.integers(0, 400), data=st.binary(max_size=2000),
       encoding=st.one_of(st.sampled_from(ALL_ENCODINGS), st.text(max_size=12)), bigendian=st.booleans())
def test_arbitrary_raw_messages_decode_or_raise_image_decode_error(height, width, step, data, encoding, bigendian):
    _decode_raw_or_error(Image(height=height, width=width, step=step, data=data, encoding=encoding,
                               is_bigendian=bigendian))


@SETTINGS
@given(height=st.integers(0, 2**32 - 1), width=st.integers(0, 2**32 - 1), step=st.integers(0, 2**32 - 1),
       encoding=st.sampled_from(ALL_ENCODINGS))
def test_absurd_header_sizes_raise_image_decode_error(height, width, step, encoding):
    _decode_raw_or_error(Image(height=height, width=width, step=step, data=bytes(64), encoding=encoding))


@SETTINGS
@given(data=st.binary(max_size=3000), fmt=st.sampled_from(["jpeg", "png", "rgb8; jpeg compressed bgr8", "", "xyz"]),
       min_size=st.sampled_from([None, 0, 64, 10000]))
def test_arbitrary_compressed_bytes_decode_or_raise_image_decode_error(data, fmt, min_size):
    try:
        rgb = compressed_to_rgb(CompressedImage(format=fmt, data=data), min_size=min_size)
    except ImageDecodeError as error:
        assert str(error)
        return
    assert rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.dtype == np.uint8


def _encoded(ext: str) -> bytes:
    y, x = np.mgrid[0:48, 0:64]
    image = np.stack([x * 4 % 256, y * 5 % 256, (x + y) * 3 % 256], axis=-1).astype(np.uint8)
    ok, buf = cv2.imencode(ext, image)
    assert ok
    return buf.tobytes()


JPEG, PNG = _encoded(".jpg"), _encoded(".png")


@SETTINGS
@given(which=st.sampled_from(["jpeg", "png"]), data=st.data())
def test_mutated_jpeg_and_png_decode_or_raise_image_decode_error(which, data):
    """Real files with bytes flipped, cut short or spliced: decode to something RGB or raise ImageDecodeError."""
    blob = bytearray(JPEG if which == "jpeg" else PNG)
    action = data.draw(st.sampled_from(["flip", "truncate", "splice"]))
    if action == "flip":
        for _ in range(data.draw(st.integers(1, 20))):
            blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    elif action == "truncate":
        blob = blob[: data.draw(st.integers(0, len(blob) - 1))]
    else:
        at = data.draw(st.integers(0, len(blob)))
        blob[at:at] = data.draw(st.binary(min_size=1, max_size=200))
    try:
        rgb = compressed_to_rgb(CompressedImage(format=which, data=bytes(blob)))
    except ImageDecodeError:
        return
    assert rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.dtype == np.uint8


def test_stamps_beyond_ros_time_are_refused_not_wrapped():
    with pytest.raises(ValueError, match="outside the range"):
        rgb_to_image(np.zeros((1, 1, 3), np.uint8), MAX_STAMP_NS + 1, "")
