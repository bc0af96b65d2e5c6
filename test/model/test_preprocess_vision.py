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
    # 5 rows of padding each side; PIL's bicubic blends 2 output rows across each edge when shrinking 4x
    assert torch.allclose(x[:, :3], torch.full((3, 3, 20), pad), atol=1e-6)  # top band
    assert torch.allclose(x[:, -3:], torch.full((3, 3, 20), pad), atol=1e-6)  # bottom band
    assert torch.allclose(x[:, 7:13], torch.full((3, 6, 20), norm(200.0)), atol=1e-6)
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


def _siglip_processor(size):
    """transformers' PIL SiglipImageProcessor: what VILA's SiglipImageProcessor computes (an independent reference)."""
    siglip = pytest.importorskip("transformers.models.siglip.image_processing_pil_siglip")
    return siglip.SiglipImageProcessorPil(size={"height": size, "width": size}, resample=3)


@pytest.mark.parametrize("shape", [(270, 480, 3), (30, 50, 3), (56, 56, 3), (300, 200, 3)])
def test_pil_resize_is_the_siglip_processor(shape):
    img = np.random.default_rng(shape[0]).integers(0, 256, shape, dtype=np.uint8)
    want = _siglip_processor(56)(images=img, return_tensors="np")["pixel_values"]
    ours = ImageProcessor(size=56)([img]).numpy()
    assert float(np.abs(ours - want).max()) < 1e-6
    fast = ImageProcessor(size=56, resize="opencv")([img]).numpy()
    if shape[:2] != (56, 56):
        assert float(np.abs(fast - want).max()) > 1e-3  # the option is not the exact path


def test_pad_then_pil_resize_is_vilas_expand2square():
    from PIL import Image

    img = np.random.default_rng(7).integers(0, 256, (40, 90, 3), dtype=np.uint8)
    square = Image.new("RGB", (90, 90), (127, 127, 127))  # VILA's expand2square with SigLIP's mean colour
    square.paste(Image.fromarray(img), (0, (90 - 40) // 2))
    want = _siglip_processor(56)(images=np.asarray(square), return_tensors="np")["pixel_values"]
    ours = ImageProcessor(size=56, aspect_ratio="pad")([img]).numpy()
    assert float(np.abs(ours - want).max()) < 1e-6


def test_nearest_resize_takes_the_pixel_under_each_centre_and_enlarges_with_the_filter():
    from PIL import Image

    # A point-sampled render at the tower's size takes each output pixel's centre; so does PIL's NEAREST.
    for shape in ((240, 320, 3), (480, 640, 3), (200, 168, 3)):
        img = np.random.default_rng(3).integers(0, 256, shape, dtype=np.uint8)
        want = np.asarray(Image.fromarray(img).resize((168, 168), resample=Image.NEAREST))
        np.testing.assert_array_equal(ImageProcessor(size=168, resize="nearest").prepare(img), want)
        assert not np.array_equal(ImageProcessor(size=168, resize="opencv").prepare(img), want)
    small = np.random.default_rng(4).integers(0, 256, (100, 120, 3), dtype=np.uint8)
    np.testing.assert_array_equal(ImageProcessor(size=168, resize="nearest").prepare(small),
                                  ImageProcessor(size=168, resize="opencv").prepare(small))


def test_the_checkpoint_names_its_resize(tmp_path):
    from vila_ros.resources import DEFAULT_MODEL_DIR

    default = ImageProcessor.load(DEFAULT_MODEL_DIR / "vision_tower" / "preprocessor_config.json")
    assert default.resize == "opencv"  # what the embedded default model was trained with: its answers stay
    public = ImageProcessor.from_dict({"size": {"height": 384, "width": 384}, "resample": 3})
    assert public.resize == "pil"
    assert "vila_ros_resize" not in public.to_dict()  # a public checkpoint's file is written back as it was
    default.save(tmp_path / "p.json")
    assert ImageProcessor.load(tmp_path / "p.json").resize == "opencv"
    assert public.with_resize("opencv").resize == "opencv" and public.with_resize(None) is public
    with pytest.raises(ValueError, match="unknown resize"):
        public.with_resize("lanczos")
    with pytest.raises(ValueError, match="vila_ros_resize"):
        ImageProcessor.from_dict({"vila_ros_resize": "magic"})


def test_engine_resize_override(tiny_dir):
    from vila_ros.engine import create_engine

    assert create_engine(tiny_dir).model.image_processor.resize == "pil"
    assert create_engine(tiny_dir, resize="opencv").model.image_processor.resize == "opencv"
