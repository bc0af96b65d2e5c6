"""The camera-alignment stage (data type sim_frame_pairs): pairs of one instant as a camera frame and as the model's
square, the tower and projector learning the frozen starting model's tokens of the square, the LLM untouched, and a
resumed stage aligning to the weights the stage started from."""
import json

import numpy as np
import pytest
import torch

from vila_ros.model.checkpoint import load_vila
from vila_ros.train.camera_alignment import AlignedTower, FramePairDataset
from vila_ros.train.trainer import train

ALIGN = {"vision_tower": True, "mm_projector": True, "llm": False}


def _recipe(**stage):
    base = {"name": "align", "train": ALIGN, "lr": 3e-3, "batch_size": 8, "max_steps": 6, "log_every": 1,
            "warmup_ratio": 0.0, "eval_every": 3, "val_samples": 8,
            "data": {"type": "sim_frame_pairs", "render_size": [[80, 60], [96, 72]], "unfamiliar": 0.1}}
    base.update(stage)
    return {"name": "test", "seed": 0, "stages": [base]}


def test_pairs_are_one_instant_as_camera_frame_and_as_square(tiny_ckpt):
    model = load_vila(tiny_ckpt)
    size = model.config.image_size
    ds = FramePairDataset(model.image_processor, size, [80, 60], unfamiliar=0.0)
    camera, square = ds.frames(3)
    assert camera.shape == (60, 80, 3) and square.shape == (size, size, 3)
    # the same scene: the camera frame squashed to the square is close to the square render, another index is not
    squashed = model.image_processor([camera])[0]
    near = (squashed - model.image_processor([square])[0]).abs().mean()
    far = (squashed - model.image_processor([ds.frames(4)[1]])[0]).abs().mean()
    assert near < far
    sample = ds[3]
    assert torch.equal(sample["pixels"], squashed) and torch.equal(sample["target_pixels"], ds[3]["target_pixels"])
    assert not torch.equal(ds[3]["pixels"], ds[4]["pixels"])


def test_unfamiliar_share_gives_the_same_frame_to_both(tiny_ckpt):
    model = load_vila(tiny_ckpt)
    ds = FramePairDataset(model.image_processor, model.config.image_size, [80, 60], unfamiliar=0.5)
    same = [i for i in range(20) if np.array_equal(*ds.frames(i))]
    assert 3 <= len(same) <= 17


def test_pairs_need_a_camera_size(tiny_ckpt, tmp_path):
    model = load_vila(tiny_ckpt)
    with pytest.raises(ValueError, match="render_size"):
        FramePairDataset(model.image_processor, model.config.image_size, None)
    recipe = _recipe()
    del recipe["stages"][0]["data"]["render_size"]
    with pytest.raises(ValueError, match="render_size"):
        train(recipe, tmp_path / "run", init=tiny_ckpt)


def test_alignment_trains_tower_and_projector_only_and_learns(tiny_ckpt, tmp_path):
    init = load_vila(tiny_ckpt)
    final = load_vila(train(_recipe(max_steps=30), tmp_path / "run", init=tiny_ckpt))
    for part, trained in ALIGN.items():
        a, b = getattr(init, part).state_dict(), getattr(final, part).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a) != trained, part
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    val = [r["val_loss"] for r in lines if "val_loss" in r]
    assert len(val) >= 2 and val[-1] < val[0]
    assert "val_token_cosine" in [r for r in lines if "val_loss" in r][-1]
    # the final checkpoint is a plain VILA1.5 directory: the teacher does not leak into it
    assert not any("teacher" in k for k in final.state_dict())


def test_teacher_stays_frozen_in_training_mode(tiny_ckpt):
    aligned = AlignedTower(load_vila(tiny_ckpt)).train()
    assert aligned.model.vision_tower.training and not aligned.teacher_tower.training
    assert not aligned.teacher_projector.training
    assert not any(p.requires_grad for p in [*aligned.teacher_tower.parameters(),
                                             *aligned.teacher_projector.parameters()])


def test_alignment_resume_keeps_the_starting_teacher(tiny_ckpt, tmp_path):
    full = load_vila(train(_recipe(), tmp_path / "full", init=tiny_ckpt))
    train(_recipe(stop_at=3), tmp_path / "split", init=tiny_ckpt)
    state = tmp_path / "split" / "1_align" / "checkpoint-3" / "trainer_state"
    assert (state / "objective.safetensors").is_file()  # the teacher: the weights the stage started from
    resumed = load_vila(train(_recipe(), tmp_path / "split", init=tiny_ckpt, resume=True))
    a, b = full.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
