"""`vila-ros resize-vision`: a real checkpoint written with its tower's input grown, read back by the real loader."""
import json
import subprocess
import sys

import pytest
import torch

from vila_ros.model.checkpoint import load_vila, read_config
from vila_ros.model.resize import resize_vision_input


def test_a_grown_tower_embeds_as_transformers_interpolates_and_keeps_every_other_weight(tiny_dir, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "vila_ros.cli", "resize-vision", "--model", str(tiny_dir),
                           "--image-size", "0", "--out", str(tmp_path / "bad")], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0 and "must be a multiple of the patch size" in proc.stderr
    old = load_vila(tiny_dir)
    patch = int(old.config.vision_tower_cfg["patch_size"])
    size = old.config.image_size + 2 * patch  # two more patches a side
    proc = subprocess.run([sys.executable, "-m", "vila_ros.cli", "resize-vision", "--model", str(tiny_dir),
                           "--image-size", str(size), "--out", str(tmp_path / "grown")], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = json.loads(proc.stdout)
    assert info["image_size"] == size and info["tokens_per_frame"] > old.config.tokens_per_image

    grown = load_vila(tmp_path / "grown")
    assert read_config(tmp_path / "grown").image_size == size and grown.image_processor.size == size
    pixels = torch.randn(2, 3, size, size)
    with torch.no_grad():
        # The old tower run at the new size with transformers' own run-time interpolation: the same embeddings.
        expected = old.vision_tower.model.embeddings(pixels, interpolate_pos_encoding=True)
        torch.testing.assert_close(grown.vision_tower.model.embeddings(pixels), expected)
        tokens = grown.encode_images(pixels)
    assert tokens.shape[1] == info["tokens_per_frame"]
    for part in ("llm", "mm_projector"):
        a, b = getattr(old, part).state_dict(), getattr(grown, part).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    before, after = old.vision_tower.model.state_dict(), grown.vision_tower.model.state_dict()
    changed = [k for k in before if before[k].shape != after[k].shape or not torch.equal(before[k], after[k])]
    assert [k.rsplit(".", 2)[-2] for k in changed] == ["position_embedding"]


def test_an_input_off_the_patch_grid_is_refused(tiny_dir, tmp_path):
    patch = int(read_config(tiny_dir).vision_tower_cfg["patch_size"])
    with pytest.raises(ValueError, match="must be a multiple of the patch size"):
        resize_vision_input(tiny_dir, tmp_path / "odd", 3 * patch + 1)
    assert not (tmp_path / "odd").exists()
