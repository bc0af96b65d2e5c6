"""The trainer: runs a recipe's stages in sequence on one process or under ``torchrun`` (DDP).

Output layout of ``run(recipe, out)``:

    <out>/init/                        the preset checkpoint, when the recipe starts from a preset (no --init)
    <out>/<k>_<stage>/checkpoint-<step>/   VILA1.5 directory (LoRA merged) + trainer_state/ (resume)
    <out>/<k>_<stage>/final/           end of a stage that is not the last (fp32, the next stage starts here)
    <out>/final/                       the trained model, a plain VILA1.5 checkpoint in ``out_dtype``
    <out>/metrics.jsonl                one JSON object per logged step / validation
    <out>/recipe.yaml                  the resolved recipe

Trainer state is safetensors + JSON only (no pickle): optimizer moments per parameter index, LoRA factors, the RNG
state as a uint8 tensor, and {step, elapsed, stage} in ``state.json``. The data position is a function of the step
(``batching.StepSampler``), so a resumed run continues with exactly the batches it would have seen.
"""
from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
import yaml
from safetensors.torch import load_file, save_file

from vila_ros import tasks
from vila_ros.model.checkpoint import load_vila, parse_dtype, read_config
from vila_ros.model.resize import resize_vision_input
from vila_ros.train import batching as B
from vila_ros.train import data as D
from vila_ros.train.distributed import Dist
from vila_ros.train.lora import apply_lora, lora_state, merge_lora, unmerge_into
from vila_ros.train.objectives import FRAME_DATA, frame_datasets, objective_for
from vila_ros.train.recipe import resolve_stages
from vila_ros.train.trainer_state import (
    STATE_DIR,
    latest_checkpoint,
    load_optimizer,
    prune_checkpoints,
    save_checkpoint_dir,
    save_optimizer,
)


# ------------------------------------------------------------------------------------------------------ pieces
def set_trainable(model: torch.nn.Module, flags: dict[str, bool]) -> None:
    for part in ("vision_tower", "mm_projector", "llm"):
        getattr(model, part).requires_grad_(bool(flags.get(part, False)))


def lr_at(progress: float, stage: dict[str, Any]) -> float:
    """Linear warmup over ``warmup_ratio`` of the stage, then cosine to ``min_lr_ratio * lr``."""
    lr, warm = stage["lr"], stage["warmup_ratio"]
    floor = lr * stage["min_lr_ratio"]
    p = min(max(progress, 0.0), 1.0)
    if warm > 0 and p < warm:
        return lr * max(p, 1e-3 * warm) / warm
    q = (p - warm) / max(1e-12, 1.0 - warm)
    return floor + (lr - floor) * 0.5 * (1.0 + math.cos(math.pi * q))


def autocast(device: torch.device, enabled: bool):
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


# ----------------------------------------------------------------------------------------------------- trainer
class Trainer:
    def __init__(self, recipe: dict[str, Any], out: str | Path, init: str | Path | None = None,
                 data_path: str | None = None, image_folder: str | None = None, resume: bool = False,
                 device: str | None = None, log: Callable[[str], None] | None = None):
        self.recipe = recipe
        self.stages = resolve_stages(recipe)
        self.out = Path(out)
        self.init = Path(init) if init else None
        self.data_path = data_path
        self.image_folder = image_folder
        self.resume = resume
        self.dist = Dist()
        if device is None:
            device = f"cuda:{self.dist.local_rank}" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.seed = int(recipe.get("seed", 0))
        self._log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.metrics_path = self.out / "metrics.jsonl"

    def log(self, msg: str) -> None:
        if self.dist.main:
            self._log(msg)

    def metric(self, record: dict[str, Any]) -> None:
        if self.dist.main:
            with open(self.metrics_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    # -- init -----------------------------------------------------------------------------------------------------
    def init_checkpoint(self) -> Path:
        if self.init is not None:
            return self.init
        spec = self.recipe.get("init") or {}
        if "preset" not in spec:
            raise ValueError("no --init checkpoint and the recipe names no init preset")
        path = self.out / "init"
        if self.dist.main and not (path / "config.json").is_file():
            from vila_ros.model.presets import init_model
            from vila_ros.train.corpus import sim_corpus

            corpus = sim_corpus(int(spec.get("corpus_clips", 3000)), int(spec.get("seed", 0))) \
                if spec.get("tokenizer_corpus", "sim") == "sim" else None
            self.log(f"init: preset {spec['preset']} -> {path}")
            init_model(spec["preset"], path, seed=int(spec.get("seed", 0)), tokenizer_corpus=corpus)
        self.dist.barrier()
        return path

    def resized(self, path: Path, image_size: int, out: Path) -> Path:
        """A stage that sets ``image_size`` starts from its input checkpoint with the tower resized to it."""
        if self.dist.main:
            self.log(f"vision tower input {read_config(path).image_size} -> {image_size} px: {out}")
            resize_vision_input(path, out, image_size)
        self.dist.barrier()
        return out

    def load(self, path: Path) -> Any:
        return load_vila(path, dtype=torch.float32, device=self.device)

    # -- data -------------------------------------------------------------------------------------------------------
    def datasets(self, stage: dict[str, Any], model: Any) -> tuple[Any, int | None, list[dict] | None]:
        cfg = dict(stage["data"])
        template = stage["template"] or model.conv_template
        common = dict(tokenizer=model.tokenizer, image_processor=model.image_processor, template=template,
                      max_length=stage["max_length"], tokens_per_image=model.tokens_per_image)
        kind = cfg.get("type", "llava")
        if kind in FRAME_DATA:  # single frames for the tower and projector, no conversation
            train, val = frame_datasets(kind, cfg, model, self.seed)
            val_samples = B.fixed_samples(val, range(int(stage["val_samples"]))) if stage["eval_every"] else None
            return train, None, val_samples
        if kind == "sim":
            params = dict(image_size=model.config.image_size, render_size=cfg.get("render_size"),
                          num_frames=int(cfg.get("num_frames") or model.config.num_video_frames),
                          mix=cfg.get("mix"), clip_fps=float(cfg.get("clip_fps", tasks.CLIP_FPS)),
                          qa_turns=int(cfg.get("qa_turns", 2)), focus_events=cfg.get("focus_events"),
                          **{key: float(cfg.get(key, 0.0))
                             for key in ("own_event_qa", "onset_windows", "cut_windows", "full_windows")})
            train = D.SimDataset(split="train", seed=int(cfg.get("seed", self.seed)), **params, **common)
            val = D.SimDataset(split="val", seed=12345, **params, **common)
            val_samples = B.fixed_samples(val, range(int(stage["val_samples"]))) if stage["eval_every"] else None
            return train, None, val_samples
        if kind != "llava":
            raise ValueError(f"unknown data type {kind!r} (llava | sim | sim_frames | sim_frame_pairs)")
        path = cfg.get("path") or self.data_path
        if not path:
            raise ValueError(f"stage {stage['name']}: LLaVA data needs --data (or data.path in the recipe)")
        folder = cfg.get("image_folder") or self.image_folder
        train = D.LlavaDataset(path, image_folder=folder, **common)
        val_samples = None
        if cfg.get("val_path") and stage["eval_every"]:
            val = D.LlavaDataset(cfg["val_path"], image_folder=cfg.get("val_image_folder") or folder, **common)
            val_samples = B.fixed_samples(val, range(min(len(val), int(stage["val_samples"]))))
        return train, len(train), val_samples

    # -- run ----------------------------------------------------------------------------------------------------------
    def run(self) -> Path:
        self.out.mkdir(parents=True, exist_ok=True)
        if self.dist.main:
            (self.out / "recipe.yaml").write_text(yaml.safe_dump(self.recipe, sort_keys=False))
        final = self.out / "final"
        if self.resume and (final / STATE_DIR / "state.json").is_file():
            self.log(f"already finished: {final}")
            return final
        model = None
        start_from = self.init_checkpoint()
        for k, stage in enumerate(self.stages):
            last = k == len(self.stages) - 1
            stage_dir = self.out / f"{k + 1}_{stage['name']}"
            done_dir = final if last else stage_dir / "final"
            if self.resume and (done_dir / STATE_DIR / "state.json").is_file():
                self.log(f"stage {stage['name']}: done earlier ({done_dir})")
                model, start_from = None, done_dir
                continue
            ckpt = latest_checkpoint(stage_dir) if self.resume else None
            if ckpt is None and stage["image_size"] and read_config(start_from).image_size != int(stage["image_size"]):
                model, start_from = None, self.resized(start_from, int(stage["image_size"]), stage_dir / "resized")
            if ckpt is not None:
                model = self.load(ckpt)
            elif model is None:
                model = self.load(start_from)
            finished = self.train_stage(model, stage, k, stage_dir, done_dir, ckpt, last)
            if not finished:
                self.log(f"stopped in stage {stage['name']} (resume with --resume)")
                return stage_dir
            start_from = done_dir
        return final

    def train_stage(self, model: Any, stage: dict[str, Any], index: int, stage_dir: Path, done_dir: Path,
                    ckpt: Path | None, last: bool) -> bool:
        dist = self.dist
        name = stage["name"]
        torch.manual_seed(self.seed + 1000 * index + dist.rank)
        set_trainable(model, stage["train"])
        lora = stage.get("lora")
        if lora:
            model.llm.requires_grad_(False)
            apply_lora(model.llm, int(lora.get("rank", 8)), float(lora.get("alpha", 16)),
                       lora.get("targets") or D_TARGETS, seed=self.seed)
            model.to(self.device)
        objective = objective_for(stage, model)
        params = [p for p in objective.module.parameters() if p.requires_grad]
        if not params:
            raise ValueError(f"stage {name}: nothing to train (train flags {stage['train']})")
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": stage["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
            lr=stage["lr"], betas=tuple(stage["betas"]), foreach=False,
        )
        train_ds, size, val_samples = self.datasets(stage, model)
        bsz, accum = int(stage["batch_size"]), int(stage["grad_accum"])
        max_steps = stage["max_steps"]
        if max_steps is None:
            max_steps = int(stage["epochs"]) * B.epoch_steps(size, bsz, accum, dist.world)
        max_steps = int(max_steps)
        max_seconds = float(stage["max_minutes"]) * 60 if stage["max_minutes"] else None
        sampler = B.StepSampler(size, bsz, accum, dist.rank, dist.world, self.seed + index)

        step, elapsed_before = 0, 0.0
        if ckpt is not None:
            state_dir = ckpt / STATE_DIR
            state = json.loads((state_dir / "state.json").read_text())
            step, elapsed_before = int(state["step"]), float(state["elapsed"])
            load_optimizer(opt, state_dir)
            if lora:
                unmerge_into(model.llm, load_file(str(state_dir / "lora.safetensors")))
            if (state_dir / "objective.safetensors").is_file():
                objective.load_state(load_file(str(state_dir / "objective.safetensors")))
            rng = load_file(str(state_dir / "rng.safetensors"))
            torch.set_rng_state(rng[f"rank{dist.rank}"] if f"rank{dist.rank}" in rng else rng["rank0"])
            self.log(f"stage {name}: resumed from {ckpt} at step {step}")

        net: Any = objective.module
        if dist.enabled:
            net = torch.nn.parallel.DistributedDataParallel(
                objective.module, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True)
        use_bf16 = bool(stage["bf16"])
        objective.module.train()
        self.log(f"stage {name}: {sum(p.numel() for p in params):,} trainable parameters, {max_steps} steps, "
                 f"batch {bsz}x{accum}x{dist.world}, lr {stage['lr']:g}, bf16 {use_bf16}")
        bar = None
        if dist.main and sys.stderr.isatty() and os.environ.get("CI", "").lower() != "true":
            from tqdm import tqdm

            bar = tqdm(total=max_steps, initial=step, desc=name, dynamic_ncols=True)
        t0 = time.time()
        window_loss, window_tokens, window_t = 0.0, 0, time.time()
        window_steps = 0
        stopped = False
        while True:
            elapsed = elapsed_before + (time.time() - t0)
            progress = step / max_steps
            if max_seconds and stage["time_schedule"]:
                progress = max(progress, elapsed / max_seconds)
            progress = dist.max(progress)
            if step >= max_steps or (max_seconds and dist.max(elapsed) >= max_seconds) or progress >= 1.0:
                break
            if stage["stop_at"] is not None and step >= int(stage["stop_at"]):
                stopped = True
                break
            lr = lr_at(progress, stage)
            for group in opt.param_groups:
                group["lr"] = lr
            step_loss, tokens = 0.0, 0
            for micro in range(accum):
                batch = objective.collate([train_ds[i] for i in sampler.micro_batch(step, micro)])
                sync = contextlib.nullcontext() if (not dist.enabled or micro == accum - 1) else net.no_sync()
                with sync:
                    with autocast(self.device, use_bf16):
                        loss, batch_size, _ = objective.loss(net, batch, self.device)
                    tokens += batch_size
                    loss = loss.float() / accum
                    loss.backward()
                step_loss += float(loss.detach())
            if stage["max_grad_norm"] > 0:
                torch.nn.utils.clip_grad_norm_(params, stage["max_grad_norm"])
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            step_loss = dist.mean(step_loss)
            window_loss += step_loss
            window_tokens += tokens * dist.world
            window_steps += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{step_loss:.3f}", lr=f"{lr:.2e}")
            if step % max(1, int(stage["log_every"])) == 0 or step == max_steps:
                now = time.time()
                self.metric({"stage": name, "step": step, "loss": round(window_loss / window_steps, 5), "lr": lr,
                             "tokens_per_s": round(window_tokens / max(1e-9, now - window_t), 1),
                             "elapsed": round(elapsed_before + now - t0, 2)})
                if bar is None:
                    self.log(f"[{name}] step {step}/{max_steps} loss {window_loss / window_steps:.4f} lr {lr:.2e} "
                             f"elapsed {elapsed_before + now - t0:.0f}s")
                window_loss, window_tokens, window_t, window_steps = 0.0, 0, now, 0
            if val_samples and stage["eval_every"] and step % int(stage["eval_every"]) == 0:
                self.validate(objective, val_samples, bsz, use_bf16, name, step, elapsed_before + time.time() - t0)
            if stage["save_every"] and step % int(stage["save_every"]) == 0 and step < max_steps:
                self.save(model, opt, stage_dir / f"checkpoint-{step}", step, elapsed_before + time.time() - t0, name,
                          objective=objective)
                if self.dist.main:
                    prune_checkpoints(stage_dir, int(stage["keep_checkpoints"]))
        if bar is not None:
            bar.close()
        elapsed = elapsed_before + time.time() - t0
        if stopped:
            self.save(model, opt, stage_dir / f"checkpoint-{step}", step, elapsed, name, objective=objective)
            return False
        if val_samples:
            self.validate(objective, val_samples, bsz, use_bf16, name, step, elapsed)
        model.train()
        # The stage's end: merge LoRA for good, write the next stage's start (or the final model).
        merge_lora(model)
        out_dtype = parse_dtype(self.recipe.get("out_dtype") or self._init_dtype) if last else None
        self.save(model, None, done_dir, step, elapsed, name, dtype=out_dtype)
        self.log(f"stage {name}: done in {elapsed / 60:.1f} min, {step} steps -> {done_dir}")
        return True

    @functools.cached_property
    def _init_dtype(self) -> str:
        return read_config(self.init_checkpoint()).model_dtype

    @torch.no_grad()
    def validate(self, objective: Any, samples: list[dict], bsz: int, bf16: bool, stage: str, step: int,
                 elapsed: float) -> float | None:
        """Mean validation loss (per supervised token or frame), plus the objective's own metrics averaged."""
        if not self.dist.main:
            self.dist.barrier()
            return None
        module = objective.module
        module.eval()
        total, count, extras = 0.0, 0, {}
        for i in range(0, len(samples), bsz):
            batch = objective.collate(samples[i:i + bsz])
            with autocast(self.device, bf16):
                loss, _, metrics = objective.loss(module, batch, self.device)
            n = objective.weight(batch)
            total += float(loss) * n
            count += n
            for key, value in metrics.items():
                extras.setdefault(key, []).append(value)
        module.train()
        val = total / max(1, count)
        record = {"stage": stage, "step": step, "val_loss": round(val, 5), "elapsed": round(elapsed, 2)}
        record.update({f"val_{k}": round(sum(v) / len(v), 4) for k, v in extras.items()})
        self.metric(record)
        self.log(f"[{stage}] step {step} val_loss {val:.4f}" + "".join(
            f" {k} {sum(v) / len(v):.3f}" for k, v in extras.items()))
        self.dist.barrier()
        return val

    def save(self, model: Any, opt: torch.optim.Optimizer | None, path: Path, step: int, elapsed: float, stage: str,
             dtype: torch.dtype | None = None, objective: Any = None) -> None:
        """Rank 0 writes a VILA1.5 directory plus trainer_state/; every rank waits for it."""
        if self.dist.main:
            save_checkpoint_dir(model, path, dtype)
            state_dir = path / STATE_DIR
            state_dir.mkdir(exist_ok=True)
            if opt is not None:
                save_optimizer(opt, state_dir)
                lstate = lora_state(model.llm)
                if lstate:
                    save_file(lstate, str(state_dir / "lora.safetensors"))
                extra = objective.state() if objective is not None else {}
                if extra:  # training-only modules (the vision stage's heads), for resume
                    save_file(extra, str(state_dir / "objective.safetensors"))
            save_file({"rank0": torch.get_rng_state()}, str(state_dir / "rng.safetensors"))
            (state_dir / "state.json").write_text(json.dumps(
                {"stage": stage, "step": step, "elapsed": elapsed, "seed": self.seed, "world_size": self.dist.world,
                 "finished": opt is None}, indent=1))
        self.dist.barrier()


D_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def train(recipe: dict[str, Any], out: str | Path, **kwargs: Any) -> Path:
    trainer = Trainer(recipe, out, **kwargs)
    try:
        return trainer.run()
    finally:
        trainer.dist.close()
