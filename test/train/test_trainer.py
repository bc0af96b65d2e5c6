import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vila_ros.model.checkpoint import load_vila, read_config
from vila_ros.model.resize import resized_position_embedding
from vila_ros.train import batching as B
from vila_ros.train import data as D
from vila_ros.train.lora import apply_lora, lora_modules
from vila_ros.train.recipe import load_recipe
from vila_ros.train.trainer import train
from vila_ros.train.trainer_state import save_checkpoint_dir

REPO = Path(__file__).resolve().parents[2]


def _recipe(**stage):
    base = {"name": "t", "train": {"vision_tower": True, "mm_projector": True, "llm": True}, "lr": 3e-3,
            "batch_size": 4, "max_steps": 4, "log_every": 1, "data": {"type": "llava"}}
    base.update(stage)
    return {"name": "test", "seed": 0, "stages": [base]}


def _fixed_batch(model, llava_json, n=4):
    ds = D.LlavaDataset(llava_json, model.tokenizer, model.image_processor, model.conv_template,
                        tokens_per_image=model.tokens_per_image)
    return B.collate([ds[i] for i in range(n)], model.tokenizer.pad_token_id)


@torch.no_grad()
def _loss(model, batch):
    return float(model(**{k: batch[k] for k in ("input_ids", "attention_mask", "images", "labels")}).loss)


def _params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_steps_reduce_loss_on_fixed_batch(tiny_ckpt, llava_json, tmp_path):
    small = tmp_path / "four.json"
    records = json.loads(llava_json.read_text())[:4]
    def absolute(record):
        images = [record["image"]] if isinstance(record["image"], str) else record["image"]
        return dict(record, image=[str(llava_json.parent / p) for p in images])

    small.write_text(json.dumps([absolute(r) if "image" in r else r for r in records]))
    before = _loss(load_vila(tiny_ckpt), _fixed_batch(load_vila(tiny_ckpt), small))
    final = train(_recipe(max_steps=12, warmup_ratio=0.0), tmp_path / "run", init=tiny_ckpt, data_path=str(small))
    after_model = load_vila(final)
    after = _loss(after_model, _fixed_batch(after_model, small))
    assert after < before - 0.5, (before, after)
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {"step", "loss", "lr", "tokens_per_s", "elapsed"} <= set(lines[0])


@pytest.mark.parametrize("flags", [{"vision_tower": False, "mm_projector": True, "llm": False},
                                   {"vision_tower": False, "mm_projector": True, "llm": True}])
def test_frozen_parts_bit_identical(tiny_ckpt, llava_json, tmp_path, flags):
    init = load_vila(tiny_ckpt)
    final = load_vila(train(_recipe(train=flags, max_steps=3), tmp_path / "run", init=tiny_ckpt,
                            data_path=str(llava_json)))
    for part, trained in flags.items():
        a, b = getattr(init, part).state_dict(), getattr(final, part).state_dict()
        same = all(torch.equal(a[k], b[k]) for k in a)
        assert same != trained, part


def test_resume_matches_uninterrupted(tiny_ckpt, llava_json, tmp_path):
    recipe = _recipe(max_steps=4)
    full = load_vila(train(recipe, tmp_path / "full", init=tiny_ckpt, data_path=str(llava_json)))
    stopped = _recipe(max_steps=4, stop_at=2)
    train(stopped, tmp_path / "split", init=tiny_ckpt, data_path=str(llava_json))
    assert (tmp_path / "split" / "1_t" / "checkpoint-2" / "trainer_state" / "optimizer.safetensors").is_file()
    assert not (tmp_path / "split" / "final").exists()
    resumed = load_vila(train(recipe, tmp_path / "split", init=tiny_ckpt, data_path=str(llava_json), resume=True))
    a, b = full.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_stage_at_another_image_size_trains_the_resized_tower_and_resumes(tiny_ckpt, llava_json, tmp_path):
    first = _recipe(max_steps=2)["stages"][0]
    size = load_vila(tiny_ckpt).config.image_size
    patch = int(read_config(tiny_ckpt).vision_tower_cfg["patch_size"])
    larger = dict(first, name="larger", image_size=size + 2 * patch, max_steps=3)
    recipe = {"name": "test", "seed": 0, "stages": [first, larger]}
    full = load_vila(train(recipe, tmp_path / "full", init=tiny_ckpt, data_path=str(llava_json)))
    assert full.config.image_size == size + 2 * patch and full.image_processor.size == size + 2 * patch
    trained_first = load_vila(tmp_path / "full" / "1_t" / "final")
    resized = load_vila(tmp_path / "full" / "2_larger" / "resized")
    key = "vision_tower.model.embeddings.position_embedding.weight"
    grid = (size + 2 * patch) // patch
    torch.testing.assert_close(resized.state_dict()[key],
                               resized_position_embedding(trained_first.state_dict()[key], grid))
    assert not torch.equal(resized.state_dict()[key], full.state_dict()[key])  # and the stage trained it

    stopped = {"name": "test", "seed": 0, "stages": [first, dict(larger, stop_at=1)]}
    train(stopped, tmp_path / "split", init=tiny_ckpt, data_path=str(llava_json))
    assert (tmp_path / "split" / "2_larger" / "checkpoint-1").is_dir()
    resumed = load_vila(train(recipe, tmp_path / "split", init=tiny_ckpt, data_path=str(llava_json), resume=True))
    a, b = full.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_lora_merge_same_logits_and_loads(tiny_ckpt, llava_json, tmp_path):
    model = load_vila(tiny_ckpt)
    batch = _fixed_batch(model, llava_json)
    apply_lora(model.llm, rank=4, alpha=8)
    with torch.no_grad():
        for m in lora_modules(model.llm).values():
            m.lora_B.normal_(0, 0.05)
        ref = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], images=batch["images"]).logits
    saved = save_checkpoint_dir(model, tmp_path / "merged")
    loaded = load_vila(saved)
    assert not lora_modules(loaded)
    with torch.no_grad():
        out = loaded(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], images=batch["images"]
        ).logits
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
    # through the trainer: only LoRA factors train, the output is a plain checkpoint
    final = train(_recipe(max_steps=2, lora={"rank": 4, "alpha": 8}), tmp_path / "run", init=tiny_ckpt,
                  data_path=str(llava_json))
    trained = load_vila(final)
    init = load_vila(tiny_ckpt)
    q_proj = trained.llm.model.layers[0].self_attn.q_proj.weight
    assert not torch.equal(q_proj, init.llm.model.layers[0].self_attn.q_proj.weight)
    assert torch.equal(trained.llm.model.embed_tokens.weight, init.llm.model.embed_tokens.weight)


def _env():
    env = dict(os.environ, CI="true", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def test_sft_cli_end_to_end(tiny_ckpt, llava_json, tmp_path):
    out = tmp_path / "sft"
    proc = subprocess.run(
        [sys.executable, "-m", "vila_ros.cli", "train", "--recipe", str(REPO / "config/train/sft.yaml"),
         "--data", str(llava_json), "--init", str(tiny_ckpt), "--out", str(out), "--max-steps", "3",
         "--set", "defaults.grad_accum=2", "--set", "defaults.save_every=2"],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("final")
    model = load_vila(out / "final")
    assert model.conv_template == "vicuna_v1"
    assert (out / "1_sft" / "checkpoint-2" / "config.json").is_file()
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines() if "loss" in x]
    assert steps[-1] == 3


def test_torchrun_two_processes(tiny_ckpt, llava_json, tmp_path):
    import signal
    import socket

    out = tmp_path / "ddp"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", port,
         "-m", "vila_ros.cli", "train", "--recipe", str(REPO / "config/train/stage3_sft.yaml"),
         "--data", str(llava_json), "--init", str(tiny_ckpt), "--out", str(out), "--max-steps", "2",
         "--set", "defaults.batch_size=2", "--device", "cpu"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both workers
        proc.communicate()
        raise
    assert proc.returncode == 0, stderr[-3000:]
    final = load_vila(out / "final")
    initial = load_vila(tiny_ckpt).state_dict().values()
    assert not all(torch.equal(a, b) for a, b in zip(final.state_dict().values(), initial))
    state = json.loads((out / "final" / "trainer_state" / "state.json").read_text())
    assert state["world_size"] == 2 and state["step"] == 2


def test_recipes_parse():
    from vila_ros.train.recipe import resolve_stages

    stages = resolve_stages(load_recipe(REPO / "config/train/default_model.yaml"))
    assert [s["train"] for s in stages] == [
        {"vision_tower": True, "mm_projector": True, "llm": False},
        {"vision_tower": False, "mm_projector": True, "llm": False},
        {"vision_tower": False, "mm_projector": True, "llm": True},
        {"vision_tower": False, "mm_projector": True, "llm": True},
        {"vision_tower": False, "mm_projector": True, "llm": True}]
    assert [s["data"]["type"] for s in stages] == ["sim_frames", "sim", "sim", "sim", "sim"]
    assert stages[1]["template"] == "plain" and stages[3]["data"]["own_event_qa"] > 0
    # the last stage is the stream (windows, half at an onset, out-of-world frames), the one of stream_finetune.yaml
    stream = stages[4]["data"]
    assert stream["mix"]["stream_window"] == max(stream["mix"].values()) and stream["onset_windows"] > 0
    assert "stream_window" not in stages[3]["data"]["mix"] and stream["mix"]["unfamiliar"] > 0
    (alone,) = resolve_stages(load_recipe(REPO / "config/train/stream_finetune.yaml"))
    assert {k: alone[k] for k in ("data", "lr", "train")} == {k: stages[4][k] for k in ("data", "lr", "train")}
    assert sum(s["max_minutes"] for s in stages) <= 55  # the whole run, init and saves included, under 60
    for name, lr in (("stage1_align", 1e-3), ("stage2_pretrain", 5e-5), ("stage3_sft", 1e-4)):
        (s,) = resolve_stages(load_recipe(REPO / f"config/train/{name}.yaml"))
        assert s["lr"] == lr
    r = load_recipe(REPO / "config/train/sft.yaml", ["defaults.lora.rank=16", "stages.sft.lr=1e-5"])
    (s,) = resolve_stages(r)
    assert s["lora"]["rank"] == 16 and s["lr"] == 1e-5


def test_camera_model_recipe_draws_fresh_camera_frame_windows_in_each_stream_stage():
    from vila_ros.train.recipe import resolve_stages

    stages = resolve_stages(load_recipe(REPO / "config/train/camera_model.yaml"))
    stream = [s for s in stages if s["data"]["type"] == "sim" and s["data"]["mix"]["stream_window"] > 0]
    assert [s["name"] for s in stream] == ["stream", "stream2", "stream168", "stream168b", "cuts", "crossing",
                                           "camera", "camera2", "camera3"]
    assert all(s["data"]["render_size"] == [[320, 240], [640, 480]] for s in stream)
    seeds = [s["data"].get("seed", 0) for s in stream]
    assert len(set(seeds)) == len(seeds)  # no stage replays another's windows
    assert [s["image_size"] for s in stages].count(168) == 1 and stages[6]["image_size"] == 168
    assert all(s["train"]["vision_tower"] for s in stages[6:]) and not any(s["train"]["vision_tower"]
                                                                           for s in stages[1:6])
    # the embedded model's steps, stage for stage (its MODEL_CARD.md), on any machine: no wall-clock caps
    assert [s["max_steps"] for s in stages] == [2503, 150, 1500, 10701, 10000, 9375, 2777, 3548, 2740, 2567, 3180,
                                                2165, 2226]
    assert not any(s["max_minutes"] or s["time_schedule"] for s in stages)


def test_a_stage_data_seed_draws_other_simulator_samples(tiny_ckpt, tmp_path):
    from vila_ros.train.trainer import Trainer

    model = load_vila(tiny_ckpt)
    stage = {**_recipe()["stages"][0], "data": {"type": "sim", "mix": {"video_caption": 1.0}}, "eval_every": 0}
    trainer = Trainer({"name": "test", "seed": 0, "stages": [stage]}, tmp_path / "run")
    stage = trainer.stages[0]
    first = trainer.datasets(stage, model)[0][0]["input_ids"]
    same = trainer.datasets(stage, model)[0][0]["input_ids"]
    other = trainer.datasets({**stage, "data": {**stage["data"], "seed": 2}}, model)[0][0]["input_ids"]
    assert torch.equal(first, same) and not torch.equal(first, other)


def test_checkpoints_by_step_latest_complete_one_and_pruning(tmp_path):
    from vila_ros.train.trainer_state import STATE_DIR, latest_checkpoint, prune_checkpoints

    for step, complete in ((250, True), (1000, True), (750, True), (1250, False)):
        state = tmp_path / f"checkpoint-{step}" / STATE_DIR
        state.mkdir(parents=True)
        if complete:  # a save cut short has no state.json
            (state / "state.json").write_text("{}")
    (tmp_path / "checkpoint-final").mkdir()
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-1000"  # by step, not by name; the torn one skipped
    prune_checkpoints(tmp_path, 0)
    assert len(list(tmp_path.glob("checkpoint-*"))) == 5
    prune_checkpoints(tmp_path, 2)
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-1000", "checkpoint-1250",
                                                                     "checkpoint-final"]
