"""Preprocessing (resize vs pad), vision feature selection, per-image independence."""
import numpy as np
import pytest
import torch

from vila_ros.model.preprocess import ImageProcessor


def norm(v):
    return (v / 255 - 0.5) / 0.5


def test_resize_stretches_and_normalises():
    img = np.zeros((40, 80, 3), np.uint8)
    img[:, :40] = (255, 0, 0)
    img[:, 40:] = (0, 0, 255)
    x = ImageProcessor(size=20, aspect_ratio="resize")([img])
    assert x.shape == (1, 3, 20, 20) and x.dtype == torch.float32
    # no aspect preservation: left half red, right half blue, over the full height
    assert torch.allclose(x[0, :, :, :9], torch.tensor([1.0, -1.0, -1.0]).view(3, 1, 1))
    assert torch.allclose(x[0, :, :, 11:], torch.tensor([-1.0, -1.0, 1.0]).view(3, 1, 1))


def test_pad_mode_centres_on_mean_colour():
    img = np.full((40, 80, 3), 200, np.uint8)
    x = ImageProcessor(size=20, aspect_ratio="pad")([img])[0]
    pad = norm(127.0)  # VILA: int(0.5 * 255)
    assert torch.allclose(x[:, :4], torch.full((3, 4, 20), pad), atol=1e-6)  # top band
    assert torch.allclose(x[:, -4:], torch.full((3, 4, 20), pad), atol=1e-6)  # bottom band
    assert torch.allclose(x[:, 6:14], torch.full((3, 8, 20), norm(200.0)), atol=1e-6)
    resized = ImageProcessor(size=20, aspect_ratio="resize")([img])[0]
    assert torch.allclose(resized, torch.full((3, 20, 20), norm(200.0)), atol=1e-6)


def test_grayscale_rgba_and_bad_input():
    proc = ImageProcessor(size=8)
    gray = np.full((10, 10), 50, np.uint8)
    rgba = np.full((10, 10, 4), 50, np.uint8)
    assert torch.equal(proc([gray]), proc([rgba]))
    with pytest.raises(TypeError):
        proc([np.zeros((8, 8, 3), np.float32)])


def test_from_preprocessor_config_dict():
    proc = ImageProcessor.from_dict({"size": {"height": 384, "width": 384}, "image_mean": [0.5] * 3,
                                     "image_std": [0.5] * 3, "resample": 3, "rescale_factor": 1 / 255}, "pad")
    assert proc.size == 384 and proc.aspect_ratio == "pad" and proc.pad_colour() == (127, 127, 127)


def test_tower_stops_at_selected_layer_like_vila(tiny_model):
    px = tiny_model.preprocess([np.random.default_rng(0).integers(0, 256, (30, 50, 3), dtype=np.uint8)])
    tower = tiny_model.vision_tower
    with torch.no_grad():
        ours = tower(px)
        ref = tower.model(px, output_hidden_states=True).hidden_states[tiny_model.config.mm_vision_select_layer]
    assert torch.allclose(ours, ref, atol=1e-6)
    assert ours.shape[1] == (56 // 14) ** 2


def test_encode_images_per_image_independent(tiny_model):
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (40, 40, 3), dtype=np.uint8) for _ in range(3)]
    with torch.no_grad():
        both = tiny_model.encode_images(tiny_model.preprocess(frames))
        alone = tiny_model.encode_images(tiny_model.preprocess(frames[1:2]))
    assert both.shape == (3, tiny_model.tokens_per_image, tiny_model.config.hidden_size)
    assert torch.allclose(both[1], alone[0], atol=1e-5)
    assert not torch.allclose(both[0], both[1])
