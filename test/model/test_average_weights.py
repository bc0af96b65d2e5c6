"""`vila-ros average-weights`: real checkpoints averaged, written and read back by the real loader."""
import json
import subprocess
import sys

import pytest
import torch

from vila_ros.model.average import average_checkpoints
from vila_ros.model.checkpoint import load_vila
from vila_ros.model.presets import init_model
from vila_ros.model.resize import resize_vision_input


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory):
    root = tmp_path_factory.mktemp("soup")
    dirs = [init_model("tiny", root / f"seed{seed}", seed=seed) for seed in (0, 1)]
    for d in dirs:
        (d / "description_regex.txt").write_text("A road\\.|A warehouse\\.\n")
        (d / "alert_thresholds.json").write_text(json.dumps({"camera_blocked": 0.9}))
    return dirs


def test_the_average_holds_the_mean_of_every_weight_and_the_shared_grammar_but_no_thresholds(two_seeds, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "vila_ros.cli", "average-weights", "--models", *map(str, two_seeds),
                           "--out", str(tmp_path / "avg")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["out"] == str(tmp_path / "avg")
    a, b, avg = (load_vila(d).state_dict() for d in (*two_seeds, tmp_path / "avg"))
    assert avg.keys() == a.keys()
    differing = [k for k in a if not torch.equal(a[k], b[k])]
    assert len(differing) > 10  # every random matrix differs between seeds (norms start equal), so the average is new
    for key in a:
        expected = ((a[key].float() + b[key].float()) / 2).to(a[key].dtype)
        assert avg[key].dtype == a[key].dtype and torch.equal(avg[key], expected), key
    assert (tmp_path / "avg" / "description_regex.txt").read_text() == "A road\\.|A warehouse\\.\n"
    assert not (tmp_path / "avg" / "alert_thresholds.json").exists()


def test_a_checkpoint_averaged_with_itself_answers_as_it_does(two_seeds, tmp_path):
    out = average_checkpoints([two_seeds[0], two_seeds[0]], tmp_path / "same")
    model, same = load_vila(two_seeds[0]), load_vila(out)
    ids = torch.tensor([[1, 5, 9, 13, 17]])
    with torch.no_grad():
        torch.testing.assert_close(same.llm(ids).logits, model.llm(ids).logits, rtol=0, atol=0)


def test_checkpoints_that_cannot_be_averaged_are_refused(two_seeds, tmp_path):
    with pytest.raises(ValueError, match="at least two"):
        average_checkpoints([two_seeds[0]], tmp_path / "one")
    with pytest.raises(ValueError, match="one of the checkpoints"):
        average_checkpoints(two_seeds, two_seeds[1])
    patch = int(load_vila(two_seeds[1]).config.vision_tower_cfg["patch_size"])
    grown = resize_vision_input(two_seeds[1], tmp_path / "grown", load_vila(two_seeds[1]).config.image_size + 2 * patch)
    with pytest.raises(ValueError, match="px frames"):
        average_checkpoints([two_seeds[0], grown], tmp_path / "mixed")
    assert not (tmp_path / "mixed").exists() and not (tmp_path / "one").exists()
    (two_seeds[1] / "description_regex.txt").write_text("A road\\.\n")  # grammars differ: none is carried
    try:
        out = average_checkpoints(two_seeds, tmp_path / "two_grammars")
        assert not (out / "description_regex.txt").exists()
    finally:
        (two_seeds[1] / "description_regex.txt").write_text("A road\\.|A warehouse\\.\n")
