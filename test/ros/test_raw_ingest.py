"""Raw ingest: Image / CompressedImage read from their CDR bytes give what rclpy's deserialization gives, over real
serialization (rclpy's own) and real DDS; malformed bytes are a bad frame, never an exception."""
import threading

import numpy as np
import pytest
import rclpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CompressedImage, Image

from vila_ros.ros import cdr
from vila_ros.ros.camera import Camera
from vila_ros.ros.conversion import (
    _RAW_ENCODINGS,
    _YUV_ENCODINGS,
    ImageDecodeError,
    compressed_to_rgb,
    image_to_rgb,
    rgb_to_compressed,
    stamp_to_ns,
)
from vila_ros.ros.frame_buffer import CameraBuffer
from vila_ros.ros.parameters import CameraSpec

ENCODINGS = sorted(_RAW_ENCODINGS) + sorted(_YUV_ENCODINGS)
BYTES_PER_PIXEL = {e: c * np.dtype(d).itemsize for e, (c, d, _) in _RAW_ENCODINGS.items()} | {
    e: 2 for e in _YUV_ENCODINGS}


def image(encoding, height, width, pad=0, frame_id="cam", sec=12, nanosec=345, bigendian=False, seed=0):
    step = width * BYTES_PER_PIXEL[encoding] + pad
    data = np.random.default_rng(seed).integers(0, 256, height * step, dtype=np.uint8).tobytes()
    msg = Image(height=height, width=width, encoding=encoding, is_bigendian=bigendian, step=step, data=data)
    msg.header.frame_id, msg.header.stamp.sec, msg.header.stamp.nanosec = frame_id, sec, nanosec
    return msg


def assert_same_image(raw, msg):
    assert (raw.header.stamp.sec, raw.header.stamp.nanosec) == (msg.header.stamp.sec, msg.header.stamp.nanosec)
    assert raw.header.frame_id == msg.header.frame_id
    assert (raw.height, raw.width, raw.encoding, bool(raw.is_bigendian), raw.step) == (
        msg.height, msg.width, msg.encoding, bool(msg.is_bigendian), msg.step)
    assert raw.data.tobytes() == bytes(msg.data)


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("max_side", [0, 20])
def test_every_encoding_decodes_as_the_deserialized_message(encoding, max_side):
    msg = image(encoding, 30, 42, pad=3, bigendian=encoding.endswith("16"))
    buf = serialize_message(msg)
    raw = cdr.read_image(buf)
    assert_same_image(raw, msg)
    assert cdr.read_stamp_ns(buf) == stamp_to_ns(msg.header.stamp)
    assert np.shares_memory(raw.data, np.frombuffer(buf, np.uint8))  # the pixels are a view, not a copy
    assert np.array_equal(image_to_rgb(raw, max_side), image_to_rgb(msg, max_side))


def test_compressed_decodes_as_the_deserialized_message():
    rgb = np.random.default_rng(1).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    msg = rgb_to_compressed(rgb, 7_000_000_123, "front_optical")
    raw = cdr.read_compressed_image(serialize_message(msg))
    assert raw.format == msg.format and raw.header.frame_id == msg.header.frame_id
    assert stamp_to_ns(raw.header.stamp) == 7_000_000_123
    assert np.array_equal(compressed_to_rgb(raw), compressed_to_rgb(msg))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(encoding=st.sampled_from(ENCODINGS), height=st.integers(0, 9), width=st.integers(0, 9),
       pad=st.integers(0, 7), frame_id=st.text(max_size=13), sec=st.integers(-2**31, 2**31 - 1),
       nanosec=st.integers(0, 999_999_999), bigendian=st.booleans(), fmt=st.text(max_size=6))
def test_odd_sizes_steps_and_frame_ids_round_trip(encoding, height, width, pad, frame_id, sec, nanosec, bigendian,
                                                  fmt):
    """Against rclpy's deserialization of the same bytes (which reads strings up to a NUL, as we do)."""
    buf = serialize_message(image(encoding, height, width, pad, frame_id, sec, nanosec, bigendian))
    assert_same_image(cdr.read_image(buf), deserialize_message(buf, Image))
    compressed = CompressedImage(format=fmt, data=bytes(range(height * width % 256)))
    compressed.header.frame_id, compressed.header.stamp.sec = frame_id, sec
    buf = serialize_message(compressed)
    raw, msg = cdr.read_compressed_image(buf), deserialize_message(buf, CompressedImage)
    assert (raw.format, raw.header.frame_id, raw.data.tobytes()) == (msg.format, msg.header.frame_id, bytes(msg.data))


@settings(max_examples=300, deadline=None)
@given(cut=st.integers(0, 200), garbage=st.binary(max_size=64), flip=st.integers(0, 199))
def test_malformed_bytes_raise_decode_error_only(cut, garbage, flip):
    buf = bytearray(serialize_message(image("rgb8", 4, 5, frame_id="some_frame")))
    for candidate in (bytes(buf[:cut]), garbage, bytes(buf[:flip]) + bytes([buf[flip] ^ 0xFF]) + bytes(buf[flip + 1:])
                      if flip < len(buf) else garbage):
        for read in (cdr.read_image, cdr.read_compressed_image, cdr.read_stamp_ns):
            try:
                read(candidate)
            except ImageDecodeError:
                pass


def test_a_skipped_frame_is_never_parsed_and_bad_bytes_are_counted():
    camera = Camera(CameraSpec("front", "/front", False, 4.0), CameraBuffer("front", 0.25, 10.0, 16, 1 << 24))
    first = serialize_message(image("rgb8", 8, 8, sec=1, nanosec=0))
    assert camera.ingest_serialized(first, lambda: 5, 0).outcome == "kept"
    # 1/30 s later: skipped from the stamp alone, so even a body that cannot be parsed is not looked at.
    skipped = serialize_message(image("rgb8", 8, 8, sec=1, nanosec=33_000_000))[:12]
    assert camera.ingest_serialized(skipped, lambda: 5, 0).outcome == "skipped"
    truncated = serialize_message(image("rgb8", 8, 8, sec=2, nanosec=0))[:40]
    result = camera.ingest_serialized(truncated, lambda: 5, 0)
    assert result.outcome == "error" and "truncated" in result.warning
    assert camera.ingest_serialized(b"\x01", lambda: 5, 0).outcome == "error"
    stats = camera.buffer.stats
    assert (stats.received, stats.decode_errors, len(camera.buffer)) == (4, 2, 1)


def test_raw_subscription_over_dds_equals_deserialized_subscription():
    """One publisher, two subscriptions of the same topic (raw and deserialized), real DDS in one process."""
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("raw_ingest_test", context=context)
    raw_got, msg_got, done = [], [], threading.Event()
    messages = [image(e, 6 + i, 10 + 2 * i, pad=i % 3, frame_id="f" * i, sec=i + 1, bigendian=e.endswith("16"), seed=i)
                for i, e in enumerate(ENCODINGS)]

    def on_raw(data):
        raw_got.append(data)
        if len(raw_got) >= len(messages) and len(msg_got) >= len(messages):
            done.set()

    def on_msg(msg):
        msg_got.append(msg)
        if len(raw_got) >= len(messages) and len(msg_got) >= len(messages):
            done.set()

    try:
        node.create_subscription(Image, "cam", on_raw, 50, raw=True)
        node.create_subscription(Image, "cam", on_msg, 50)
        publisher = node.create_publisher(Image, "cam", 50)
        executor = rclpy.executors.SingleThreadedExecutor(context=context)
        executor.add_node(node)
        deadline = 100
        while publisher.get_subscription_count() < 2 and deadline:
            executor.spin_once(timeout_sec=0.05)
            deadline -= 1
        for msg in messages:
            publisher.publish(msg)
        for _ in range(200):
            if done.is_set():
                break
            executor.spin_once(timeout_sec=0.05)
        assert len(raw_got) == len(msg_got) == len(messages)
        for data, msg in zip(raw_got, msg_got):
            assert isinstance(data, bytes)
            raw = cdr.read_image(data)
            assert_same_image(raw, msg)
            assert np.array_equal(image_to_rgb(raw, 4), image_to_rgb(msg, 4))
    finally:
        node.destroy_node()
        rclpy.shutdown(context=context)
