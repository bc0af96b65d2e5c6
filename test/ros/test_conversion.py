"""Camera messages -> RGB frames, with real JPEG/PNG bytes and the layouts drivers actually send."""
import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image

from vila_ros.ros.conversion import (
    ImageDecodeError,
    compressed_to_rgb,
    image_to_rgb,
    ns_to_stamp,
    rgb_to_compressed,
    rgb_to_image,
    shrink,
    stamp_to_ns,
)


def gradient(height=48, width=64):
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 4 % 256, y * 5 % 256, (x + y) * 3 % 256], axis=-1).astype(np.uint8)


def raw_message(pixels: np.ndarray, encoding: str, pad: int = 0, bigendian: bool = False) -> Image:
    rows = pixels.reshape(pixels.shape[0], -1)
    if pixels.dtype == np.uint16:
        rows = pixels.astype(">u2" if bigendian else "<u2").view(np.uint8).reshape(pixels.shape[0], -1)
    padded = np.concatenate([rows, np.full((rows.shape[0], pad), 77, np.uint8)], axis=1)
    return Image(height=pixels.shape[0], width=pixels.shape[1], encoding=encoding, is_bigendian=bigendian,
                 step=padded.shape[1], data=padded.tobytes())


@pytest.mark.parametrize("pad", [0, 13])
def test_rgb8_and_bgr8_with_row_padding(pad):
    rgb = gradient()
    assert np.array_equal(image_to_rgb(raw_message(rgb, "rgb8", pad)), rgb)
    assert np.array_equal(image_to_rgb(raw_message(rgb[..., ::-1].copy(), "bgr8", pad)), rgb)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "16UC1", "yuv422"])
@pytest.mark.parametrize("max_side", [0, 40, 64, 500])
def test_shrinking_while_decoding_equals_decoding_then_shrinking(encoding, max_side):
    """8-bit frames are shrunk straight from the message and converted after: the same pixels as converting the
    full frame first, and never a view of the message's buffer."""
    rgb = np.random.default_rng(5).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    if encoding in ("rgba8", "bgra8"):
        pixels = np.concatenate([rgb, np.full((96, 128, 1), 200, np.uint8)], axis=-1)
    elif encoding == "mono8":
        pixels = rgb[..., 0].copy()
    elif encoding == "16UC1":
        pixels = rgb[..., 0].astype(np.uint16) * 250
    elif encoding == "yuv422":
        pixels = rgb[..., :2].copy()  # two bytes a pixel
    else:
        pixels = rgb
    msg = raw_message(pixels, encoding, pad=6)
    got = image_to_rgb(msg, max_side)
    assert np.array_equal(got, shrink(image_to_rgb(msg), max_side))
    assert got.shape[-1] == 3 and (max_side == 0 or max(got.shape[:2]) <= max_side)
    assert not np.shares_memory(got, np.frombuffer(msg.data, np.uint8))


def test_mono16_big_and_little_endian_are_stretched_identically():
    depth = (np.arange(48 * 64, dtype=np.uint16).reshape(48, 64) * 7 + 1000)
    little = image_to_rgb(raw_message(depth, "16UC1"))
    big = image_to_rgb(raw_message(depth, "16UC1", pad=4, bigendian=True))
    assert np.array_equal(little, big)
    assert little[0, 0].tolist() == [0, 0, 0] and little[-1, -1].tolist() == [255, 255, 255]


def test_rgba_mono_and_yuv():
    rgb = gradient()
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=-1)
    assert np.array_equal(image_to_rgb(raw_message(rgba, "rgba8")), rgb)
    gray = rgb[..., 0].copy()
    assert np.array_equal(image_to_rgb(raw_message(gray, "mono8"))[..., 1], gray)
    uyvy = np.full((48, 64, 2), 128, np.uint8)
    assert image_to_rgb(raw_message(uyvy, "yuv422")).shape == (48, 64, 3)


@pytest.mark.parametrize("message, reason", [
    (Image(height=4, width=4, encoding="rgb8", step=12, data=bytes(20)), "needed"),
    (Image(height=4, width=4, encoding="rgb8", step=8, data=bytes(64)), "shorter than a row"),
    (Image(height=4, width=4, encoding="32FC1", step=16, data=bytes(64)), "unsupported encoding"),
    (Image(height=0, width=4, encoding="rgb8", step=12, data=b""), "empty"),
])
def test_bad_raw_images_raise_clear_errors(message, reason):
    with pytest.raises(ImageDecodeError, match=reason):
        image_to_rgb(message)


def test_jpeg_from_real_bytes_and_reduced_decode():
    rgb = cv2.resize(gradient(), (640, 480), interpolation=cv2.INTER_NEAREST)
    msg = rgb_to_compressed(rgb, 5, "cam", quality=95)
    assert bytes(msg.data[:2]) == b"\xff\xd8"
    full = compressed_to_rgb(msg)
    assert full.shape == (480, 640, 3)
    assert np.abs(full.astype(int) - rgb).mean() < 6
    reduced = compressed_to_rgb(msg, min_size=112)
    assert 112 <= min(reduced.shape[:2]) < 480


def test_jpeg_decode_reduced_to_the_longer_side_the_node_keeps():
    rgb = cv2.resize(gradient(), (1920, 1080), interpolation=cv2.INTER_LINEAR)
    msg = rgb_to_compressed(rgb, 5, "cam", quality=90)
    assert compressed_to_rgb(msg, min_long_side=448).shape == (270, 480, 3)  # 1/4 keeps 480 >= 448
    assert compressed_to_rgb(msg, min_long_side=500).shape == (405, 720, 3)  # 1/4 would be too small: 3/8
    assert compressed_to_rgb(msg, min_long_side=4000).shape == (1080, 1920, 3)  # never upscaled


def test_png_and_corrupt_compressed_images():
    rgb = gradient()
    ok, png = cv2.imencode(".png", rgb[..., ::-1])
    assert ok
    assert np.array_equal(compressed_to_rgb(CompressedImage(format="png", data=png.tobytes())), rgb)
    with pytest.raises(ImageDecodeError):
        compressed_to_rgb(CompressedImage(format="jpeg", data=b"\xff\xd8not a jpeg at all"))
    with pytest.raises(ImageDecodeError, match="empty"):
        compressed_to_rgb(CompressedImage(format="jpeg", data=b""))


def test_round_trips_of_images_and_stamps():
    rgb = gradient()
    msg = rgb_to_image(rgb, 1_700_000_000_123_456_789, "front", encoding="bgr8")
    assert msg.header.stamp.sec == 1_700_000_000 and msg.header.stamp.nanosec == 123_456_789
    assert np.array_equal(image_to_rgb(msg), rgb)
    assert stamp_to_ns(ns_to_stamp(42_000_000_001)) == 42_000_000_001


@pytest.mark.parametrize("shape", [(1080, 1920, 3), (1080, 1920), (2, 5000, 3), (500, 300, 4)])
def test_shrink_fits_keeps_the_aspect_and_averages_fine_detail_away(shape):
    """Shrunk 2x or more, a one-pixel checkerboard must come out flat grey, not as moire (a plain bilinear or nearest
    resize from full size would keep it); the longer side ends at most ``max_side`` and the aspect within a pixel."""
    rows, cols = np.indices(shape[:2])
    board = ((rows + cols) % 2 * 255).astype(np.uint8)
    image = np.repeat(board[..., None], shape[2], axis=-1) if len(shape) == 3 else board
    small = shrink(image, 448)
    height, width = small.shape[:2]
    assert max(height, width) <= 448 and small.shape[2:] == shape[2:]
    assert abs(height / width - shape[0] / shape[1]) * max(height, width) <= 1.0 or min(height, width) == 1
    if max(shape[:2]) >= 2 * 448 and min(shape[:2]) >= 4:
        assert np.abs(small.astype(int) - 127.5).max() <= 1
    assert shrink(image, 0) is image and shrink(small, 448) is small
