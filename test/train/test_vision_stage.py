"""The `vision` stage (data type sim_frames): simulator frame labels, heads on the tower and projector, the LLM
untouched, its loss going down, and resume reproducing an uninterrupted run bit for bit."""
import json

import torch

from vila_ros.model.checkpoint import load_vila
from vila_ros.sim import make_scenario
from vila_ros.sim.actors import OCCUPANCY_KINDS
from vila_ros.train.trainer import train
from vila_ros.train.vision_labels import CLASS_ATTRIBUTES, COUNT_ATTRIBUTES, IGNORE, SimFrameDataset, encode_labels

VISION = {"vision_tower": True, "mm_projector": True, "llm": False}


def _recipe(**stage):
    base = {"name": "vision", "train": VISION, "lr": 3e-3, "batch_size": 8, "max_steps": 6, "log_every": 1,
            "warmup_ratio": 0.0, "eval_every": 3, "val_samples": 8, "data": {"type": "sim_frames"}}
    base.update(stage)
    return {"name": "test", "seed": 0, "stages": [base]}


def test_frame_labels_show_only_what_the_camera_sees():
    scenario = make_scenario(110, family="road")  # a cyclist hidden behind a nearer car at t = 2 s
    hidden = [a for a in scenario.actors if a.kind == "cyclist"]
    assert hidden and id(hidden[0]) not in scenario.in_sight(2.0)
    labels = scenario.frame_labels(2.0, grid=8)
    assert labels["cyclists"] == 0 and labels["cars"] == 2
    assert all("cyclist" not in cell for row in labels["occupancy"] for cell in row)
    assert sum(len(cell) for row in labels["occupancy"] for cell in row) >= 2  # the two cars
    blocked = make_scenario(3, category="camera_blocked")
    dark = blocked.frame_labels(blocked.event.start + 2.0)
    assert dark["effect"] == "camera_blocked" and "family" not in dark and "time" not in dark
    assert not blocked.in_sight(blocked.event.start + 2.0)


def test_encoded_labels_ignore_what_the_family_lacks():
    labels = make_scenario(1, family="warehouse").frame_labels(1.0, grid=8)
    encoded = encode_labels(labels, 8)
    assert int(encoded["weather"]) == IGNORE and int(encoded["cars"]) == IGNORE
    assert int(encoded["lighting"]) == CLASS_ATTRIBUTES["lighting"].index(labels["lighting"])
    assert int(encoded["people"]) == labels["people"]
    assert encoded["occupancy"].shape == (64, len(OCCUPANCY_KINDS))
    assert int(encoded["occupancy"].sum()) == sum(len(c) for row in labels["occupancy"] for c in row)
    assert set(COUNT_ATTRIBUTES) <= set(encoded)


def test_frames_are_deterministic_and_differ_by_index(tiny_ckpt):
    model = load_vila(tiny_ckpt)
    ds = SimFrameDataset(model.image_processor, model.config.image_size, 2)
    assert torch.equal(ds[5]["pixels"], ds[5]["pixels"]) and not torch.equal(ds[5]["pixels"], ds[6]["pixels"])


def test_vision_stage_trains_tower_and_projector_only_and_learns(tiny_ckpt, tmp_path):
    init = load_vila(tiny_ckpt)
    final = load_vila(train(_recipe(max_steps=30), tmp_path / "run", init=tiny_ckpt))
    for part, trained in VISION.items():
        a, b = getattr(init, part).state_dict(), getattr(final, part).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a) != trained, part
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in lines if "loss" in r]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5
    val = [r for r in lines if "val_loss" in r]
    assert val and {"val_occupancy_f1", "val_family", "val_cars"} <= set(val[-1])
    # the final checkpoint is a plain VILA1.5 directory: no head tensors leak into it
    assert not any("occupancy" in k or "counts" in k for k in final.state_dict())


def test_vision_stage_resume_matches_uninterrupted(tiny_ckpt, tmp_path):
    full = load_vila(train(_recipe(), tmp_path / "full", init=tiny_ckpt))
    train(_recipe(stop_at=3), tmp_path / "split", init=tiny_ckpt)
    state = tmp_path / "split" / "1_vision" / "checkpoint-3" / "trainer_state"
    assert (state / "objective.safetensors").is_file()  # the heads, needed to continue
    resumed = load_vila(train(_recipe(), tmp_path / "split", init=tiny_ckpt, resume=True))
    a, b = full.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
