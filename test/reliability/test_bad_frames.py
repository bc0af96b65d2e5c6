"""Bad-frame matrix at the conversion and buffer level: every malformed camera message gives `ImageDecodeError` with
a reason (the node counts it and drops the frame), and odd clocks or bursts leave the buffer correct and bounded."""
import struct
import zlib

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image

from vila_ros.ros.conversion import (
    MAX_COMPRESSED_PIXELS,
    ImageDecodeError,
    compressed_to_rgb,
    image_to_rgb,
    rgb_to_image,
)
from vila_ros.ros.frame_buffer import CameraBuffer, Frame
from vila_ros.tasks import NANOSECONDS


def gradient(height=48, width=64):
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 4 % 256, y * 5 % 256, (x + y) * 3 % 256], axis=-1).astype(np.uint8)


def encoded(ext: str, image=None) -> bytes:
    ok, buf = cv2.imencode(ext, gradient() if image is None else image)
    assert ok
    return buf.tobytes()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge image (a decompression bomb's header)."""
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + png_chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + png_chunk(b"IEND", b""))


def jpeg_declaring(width: int, height: int) -> bytes:
    blob = bytearray(encoded(".jpg", np.zeros((16, 16, 3), np.uint8)))
    sof = blob.find(b"\xff\xc0")
    blob[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(blob)


JPEG, PNG = encoded(".jpg"), encoded(".png")


def png_bad_crc() -> bytes:
    blob = bytearray(PNG)
    blob[40] ^= 0xFF  # inside the first IDAT
    return bytes(blob)


RAW_CASES = {
    "step shorter than a row": (Image(height=4, width=4, encoding="rgb8", step=8, data=bytes(48)),
                                "shorter than a row"),
    "size larger than data": (Image(height=40, width=4, encoding="rgb8", step=12, data=bytes(48)), "needed"),
    "step larger than data": (Image(height=4, width=4, encoding="rgb8", step=1000, data=bytes(48)), "needed"),
    "truncated data": (Image(height=4, width=4, encoding="rgb8", step=12, data=bytes(47)), "needed"),
    "no data": (Image(height=4, width=4, encoding="rgb8", step=12, data=b""), "needed"),
    "unknown encoding": (Image(height=4, width=4, encoding="32FC1", step=16, data=bytes(64)), "unsupported encoding"),
    "empty encoding": (Image(height=4, width=4, encoding="", step=12, data=bytes(48)), "unsupported encoding"),
    "zero height": (Image(height=0, width=4, encoding="rgb8", step=12, data=b""), "empty image"),
    "zero width": (Image(height=4, width=0, encoding="rgb8", step=0, data=b""), "empty image"),
    "default message": (Image(), "empty image"),
    "odd-width yuv422": (Image(height=2, width=3, encoding="yuv422", step=6, data=bytes(12)), "even width"),
    "16-bit step shorter than a row": (Image(height=2, width=4, encoding="mono16", step=4, data=bytes(16)),
                                       "shorter than a row"),
    "huge header, little data": (Image(height=2**31, width=2**31, encoding="rgb8", step=3 * 2**31, data=bytes(64)),
                                 "needed"),
}

COMPRESSED_CASES = {
    "empty": (CompressedImage(format="jpeg", data=b""), "empty compressed image"),
    "jpeg truncated": (CompressedImage(format="jpeg", data=JPEG[: len(JPEG) // 2]), "corrupt JPEG"),
    "jpeg without end marker": (CompressedImage(format="jpeg", data=JPEG[:-2]), "corrupt JPEG"),
    "jpeg header only": (CompressedImage(format="jpeg", data=JPEG[:20]), "corrupt JPEG"),
    "jpeg start marker then garbage": (CompressedImage(format="jpeg", data=b"\xff\xd8" + bytes(range(256)) * 4),
                                       "corrupt JPEG"),
    "jpeg bomb header": (CompressedImage(format="jpeg", data=jpeg_declaring(65000, 65000)), "declares"),
    "png truncated": (CompressedImage(format="png", data=PNG[: len(PNG) // 2]), "cannot decode"),
    "png signature only": (CompressedImage(format="png", data=PNG[:8]), "cannot decode"),
    "png bad crc": (CompressedImage(format="png", data=png_bad_crc()), "cannot decode"),
    "png bomb header": (CompressedImage(format="png", data=png_declaring(60000, 60000)), "declares"),
    "text": (CompressedImage(format="jpeg", data=b"hello world"), "cannot decode"),
}


@pytest.mark.parametrize("case", sorted(RAW_CASES))
def test_bad_raw_frames_raise_image_decode_error(case):
    message, reason = RAW_CASES[case]
    with pytest.raises(ImageDecodeError, match=reason):
        image_to_rgb(message)


@pytest.mark.parametrize("case", sorted(COMPRESSED_CASES))
def test_bad_compressed_frames_raise_image_decode_error(case):
    message, reason = COMPRESSED_CASES[case]
    with pytest.raises(ImageDecodeError, match=reason):
        compressed_to_rgb(message)


def test_png_over_opencvs_own_limit_is_an_image_decode_error_even_without_our_check(monkeypatch):
    """OpenCV raises cv2.error (not None) for >2**30 pixels: that must not escape either."""
    import vila_ros.ros.conversion as conversion

    monkeypatch.setattr(conversion, "MAX_COMPRESSED_PIXELS", 2**40)
    with pytest.raises(ImageDecodeError, match="cannot decode"):
        compressed_to_rgb(CompressedImage(format="png", data=png_declaring(60000, 60000)))


def test_wrong_format_string_still_decodes_by_content():
    # cv2.imencode wrote gradient() as BGR, so it decodes to RGB reversed
    assert np.array_equal(compressed_to_rgb(CompressedImage(format="jpeg", data=PNG)), gradient()[..., ::-1])
    assert compressed_to_rgb(CompressedImage(format="png", data=JPEG)).shape == (48, 64, 3)


def test_data_longer_than_needed_is_ignored():
    msg = rgb_to_image(gradient(), 0, "cam")
    msg.data = bytes(msg.data) + bytes(1000)
    assert np.array_equal(image_to_rgb(msg), gradient())


def test_8k_rgb8_and_jpeg_decode():
    height, width = 4320, 7680
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[::97, :, 0] = 200
    rgb[:, ::89, 2] = 100
    assert height * width <= MAX_COMPRESSED_PIXELS
    decoded = image_to_rgb(rgb_to_image(rgb, 1, "cam"))
    assert np.array_equal(decoded, rgb)
    del decoded
    jpeg = CompressedImage(format="jpeg", data=encoded(".jpg", np.full((height, width, 3), 90, np.uint8)))
    reduced = compressed_to_rgb(jpeg, min_size=448)  # DCT-domain downscaling, never below 448 on the short side
    assert min(reduced.shape[:2]) >= 448 and reduced.shape[0] < height
    assert compressed_to_rgb(jpeg).shape == (height, width, 3)


# ------------------------------------------------------------------------------------------------ buffer level
def make_buffer(**overrides) -> CameraBuffer:
    bounds = dict(keep_interval_s=0.25, max_age_s=10.0, max_frames=40, max_bytes=10**9)
    bounds.update(overrides)
    return CameraBuffer("front", **bounds)


def feed(buffer: CameraBuffer, message, stamp_ns: int) -> bool:
    """What the node's camera callback does: rate-check before decoding, count decode errors, drop the frame."""
    if not buffer.wants(stamp_ns):
        return False
    try:
        rgb = image_to_rgb(message) if isinstance(message, Image) else compressed_to_rgb(message)
    except ImageDecodeError as error:
        buffer.record_error(str(error))
        return False
    buffer.add(Frame(buffer.camera, stamp_ns, "cam", rgb))
    return True


SMALL = rgb_to_image(gradient(8, 8), 0, "cam")


def test_bad_frames_are_counted_and_dropped_and_good_frames_keep_flowing():
    buffer = make_buffer(keep_interval_s=0.0)
    bad = [m for m, _ in RAW_CASES.values()] + [m for m, _ in COMPRESSED_CASES.values()]
    stamp = 0
    for message in bad:
        stamp += NANOSECONDS // 10
        assert feed(buffer, SMALL, stamp)
        stamp += NANOSECONDS // 10
        assert not feed(buffer, message, stamp)
    assert buffer.stats.decode_errors == len(bad) and buffer.stats.last_error
    assert len(buffer) == buffer.stats.kept == len(bad)
    assert all(f.rgb.shape == (8, 8, 3) for f in buffer.window())


def test_time_going_backwards_bag_loop_resets_the_buffer():
    buffer = make_buffer()
    for i in range(20):  # 5 s at 4 fps
        assert feed(buffer, SMALL, 100 * NANOSECONDS + i * NANOSECONDS // 4)
    assert len(buffer) == 20
    assert feed(buffer, SMALL, 100 * NANOSECONDS)  # the bag loops back to its start
    assert buffer.stats.time_resets == 1 and len(buffer) == 1
    for i in range(1, 8):
        assert feed(buffer, SMALL, 100 * NANOSECONDS + i * NANOSECONDS // 4)
    assert len(buffer) == 8
    stamps = [f.stamp_ns for f in buffer.window()]
    assert stamps == sorted(stamps)


def test_small_backwards_jitter_is_dropped_not_a_reset():
    buffer = make_buffer()
    assert feed(buffer, SMALL, 10 * NANOSECONDS)
    assert not feed(buffer, SMALL, 10 * NANOSECONDS - NANOSECONDS // 10)  # 100 ms late, out of order
    assert not feed(buffer, SMALL, 10 * NANOSECONDS)  # duplicate stamp
    assert buffer.stats.skipped_out_of_order == 2 and buffer.stats.time_resets == 0 and len(buffer) == 1


@pytest.mark.parametrize("jump_s", [2.0, 60.0, 86400.0])
def test_forward_jump_evicts_by_age_and_restarts_the_rate_grid(jump_s):
    buffer = make_buffer(max_age_s=3.0)
    for i in range(8):
        feed(buffer, SMALL, i * NANOSECONDS // 4)
    start = int((7 * 0.25 + jump_s) * NANOSECONDS)
    for i in range(30):  # 30 fps after the jump
        feed(buffer, SMALL, start + i * NANOSECONDS // 30)
    window = buffer.window()
    assert window[0].stamp_ns >= start - 3 * NANOSECONDS
    assert window[-1].stamp_ns - window[0].stamp_ns <= 3 * NANOSECONDS
    after = [f for f in window if f.stamp_ns >= start]
    assert 3 <= len(after) <= 5  # 1 s at 30 fps kept at ~4 fps, the grid restarted at the jump
    assert buffer.stats.time_resets == 0


def test_200fps_burst_into_a_4fps_buffer_stays_bounded():
    frame_bytes = 64 * 48 * 3
    buffer = make_buffer(max_frames=16, max_bytes=12 * frame_bytes, max_age_s=5.0)
    message = rgb_to_image(gradient(), 0, "cam")
    seconds, fps = 20, 200
    decoded = 0
    for i in range(seconds * fps):
        decoded += feed(buffer, message, i * NANOSECONDS // fps)
        assert len(buffer) <= 16 and buffer.nbytes <= 12 * frame_bytes
    assert buffer.stats.received == seconds * fps
    assert decoded == buffer.stats.kept and abs(decoded - 4 * seconds) <= 2  # decoded only at the clip rate
    assert buffer.stats.skipped_rate == seconds * fps - decoded
    assert len(buffer) == 12 and buffer.nbytes == 12 * frame_bytes


# Random clocks: steady, jittered, late, duplicated, looped back and jumped forward stamps.
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

steps_ns = st.one_of(st.integers(1, NANOSECONDS // 10),  # a fast camera
                     st.integers(-NANOSECONDS // 2, 0),  # late or duplicate
                     st.integers(-100 * NANOSECONDS, -NANOSECONDS),  # bag loop
                     st.integers(NANOSECONDS, 1000 * NANOSECONDS))  # jump forward


@settings(max_examples=200, deadline=None)
@given(steps=st.lists(steps_ns, max_size=120), interval=st.sampled_from([0.0, 0.1, 0.25]),
       max_frames=st.integers(1, 10), max_frames_bytes=st.integers(1, 10))
def test_buffer_invariants_under_random_clocks(steps, interval, max_frames, max_frames_bytes):
    rgb = np.zeros((2, 2, 3), np.uint8)
    buffer = make_buffer(keep_interval_s=interval, max_age_s=3.0, max_frames=max_frames,
                         max_bytes=max_frames_bytes * rgb.nbytes)
    stamp = 2000 * NANOSECONDS
    for step in steps:
        stamp = max(0, stamp + step)
        kept = buffer.wants(stamp)
        if kept:
            buffer.add(Frame("front", stamp, "cam", rgb))
        stamps = [f.stamp_ns for f in buffer.window()]
        assert not kept or stamps[-1] == stamp
        assert stamps == sorted(set(stamps))  # strictly increasing, even across loops
        assert 1 <= len(stamps) <= min(max_frames, max_frames_bytes)
        assert buffer.nbytes == len(stamps) * rgb.nbytes
        assert stamps[-1] - stamps[0] <= 3 * NANOSECONDS
    stats = buffer.stats
    assert stats.received == len(steps)
    assert stats.received == stats.kept + stats.skipped_rate + stats.skipped_out_of_order
