"""``vila-ros train`` (run a recipe, config/train/*.yaml) and ``vila-ros eval`` (a checkpoint on held-out simulator
seeds). torch is imported inside the handlers, so registering the commands stays light."""
from __future__ import annotations

import argparse
import json
import os
import sys

from vila_ros import tasks
from vila_ros.model.config import RESIZES


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train or fine-tune a VILA1.5 checkpoint with a recipe (config/train/*.yaml)",
        description="Run a training recipe: VILA's stages in sequence, or domain SFT on LLaVA-style JSON. "
                    "Works unchanged under torchrun (DDP). The trained model is written to OUT/final.",
    )
    p.add_argument("--recipe", required=True, help="recipe YAML, e.g. config/train/sft.yaml")
    p.add_argument("--out", required=True, help="output folder (checkpoints, metrics.jsonl, final/)")
    p.add_argument("--data", help="LLaVA-style JSON (or JSON lines) for stages with llava data")
    p.add_argument("--image-folder", help="folder the records' image paths are relative to (default: the JSON's)")
    p.add_argument("--init", help="VILA1.5 checkpoint to start from (default: the recipe's init preset)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    p.add_argument("--max-steps", type=int, help="override max_steps of every stage")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe key by dotted path (defaults.batch_size=4, stages.2.lr=3e-4)")
    p.add_argument("--device", help="cpu | cuda | cuda:N (default: cuda when available)")
    p.set_defaults(func=_handle)

    register_eval(subparsers)
    gate = subparsers.add_parser(
        "fit-world-gate", help="fit and store the model's world gate (an unfamiliar scene is not described as a road)",
        description="Fits the statistics of the model's image features on simulator scenes rendered as camera "
                    "frames (train split), sets the threshold from the validation split's scenes, and "
                    "stores world_gate.safetensors (+ world_gate.json, the distances) with the model. The node "
                    "then describes a window whose newest frame lies beyond it as an unfamiliar scene and raises "
                    "no alert on it (world_gate_file).")
    gate.add_argument("--model", required=True, help="checkpoint directory (the gate is written into it)")
    gate.add_argument("--scenes", type=int, default=3000,
                      help="train-split scenes to fit on, a frame of each (default 3000)")
    gate.add_argument("--out", help="write the gate here instead of into the model directory")
    gate.set_defaults(func=_handle_world_gate)


def _handle_world_gate(args: argparse.Namespace) -> int:
    from vila_ros.model.checkpoint import CheckpointError
    from vila_ros.train.world_gate_fit import fit_world_gate

    try:
        report = fit_world_gate(args.model, args.scenes, args.out)
    except (ValueError, OSError, CheckpointError) as error:
        print(f"vila-ros fit-world-gate: {error}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=1))
    return 0


def _handle(args: argparse.Namespace) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from vila_ros.train.recipe import RecipeError, load_recipe

    overrides = list(args.set)
    try:
        recipe = load_recipe(args.recipe, overrides)
        if args.max_steps is not None:
            recipe.setdefault("defaults", {})["max_steps"] = args.max_steps
            for stage in recipe["stages"]:
                stage["max_steps"] = args.max_steps
    except (OSError, RecipeError) as error:
        print(f"vila-ros train: {error}", file=sys.stderr)
        return 2
    from vila_ros.train.trainer import train

    try:
        final = train(recipe, args.out, init=args.init, data_path=args.data, image_folder=args.image_folder,
                      resume=args.resume, device=args.device)
    except (ValueError, FileNotFoundError) as error:
        print(f"vila-ros train: {error}", file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", "0")) == 0:
        print(final)
    return 0


def register_eval(subparsers: argparse._SubParsersAction) -> None:
    """``vila-ros eval`` (defaults from ``vila_ros.train.eval``, a light import: no torch)."""
    from vila_ros.train.eval import DEFAULT_BATCH, DEFAULT_COUNT, DEFAULT_STRETCH

    p = subparsers.add_parser(
        "eval", help="evaluate a checkpoint on held-out simulator seeds (captions, QA, alerts, frames-to-alert)",
        description="Evaluate a VILA1.5 checkpoint on held-out simulator scenarios with greedy decoding: caption "
                    "attribute accuracy, QA accuracy, alert precision/recall/F1 per category, frames-to-alert, each "
                    "with the clip and with its last frame alone. --out writes eval.json, eval.md and eval.png.",
    )
    p.add_argument("--model", required=True, help="checkpoint directory (VILA1.5 layout)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"), help="seed split (default test)")
    p.add_argument("--count", type=int, default=DEFAULT_COUNT, help=f"scenarios (default {DEFAULT_COUNT})")
    p.add_argument("--offset", type=int, default=0, help="first seed index within the split (default 0)")
    p.add_argument("--family", choices=tasks.FAMILIES, help="only this scene family (default: both)")
    p.add_argument("--frames", type=int, help="frames per clip (default: the checkpoint's num_video_frames)")
    p.add_argument("--clip-fps", type=float, default=tasks.CLIP_FPS,
                   help=f"frames per second of a clip: the rate the model was trained on (default {tasks.CLIP_FPS})")
    p.add_argument("--stretch", type=int, default=DEFAULT_STRETCH,
                   help=f"frames of the frames-to-alert stretch (default {DEFAULT_STRETCH})")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH, help="prompts decoded together")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "int4"),
                   help="int4 needs a checkpoint written by `vila-ros quantize`")
    p.add_argument("--device", default="cpu")
    p.add_argument("--resize", choices=RESIZES,
                   help="image resize (default: what the checkpoint's preprocessor_config.json names)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--json", action="store_true", help="print the result as JSON (progress goes to stderr)")
    p.add_argument("--out", help="folder for eval.json, eval.md and eval.png")
    p.add_argument("--no-clips", action="store_true", help="leave the per-clip records out of the JSON")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=_handle_eval)


def _handle_eval(args: argparse.Namespace) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    progress = None if args.quiet else (lambda msg: print(f"vila-ros eval: {msg}", file=sys.stderr, flush=True))
    from vila_ros.model.checkpoint import CheckpointError
    from vila_ros.train.eval import evaluate

    try:
        result = evaluate(args.model, split=args.split, count=args.count, family=args.family, offset=args.offset,
                          num_frames=args.frames, clip_fps=args.clip_fps, stretch=args.stretch,
                          batch_size=args.batch_size, precision=args.precision, device=args.device,
                          include_clips=not args.no_clips, progress=progress, resize=args.resize)
    except (ValueError, OSError, CheckpointError) as error:
        print(f"vila-ros eval: {error}", file=sys.stderr)
        return 2
    from vila_ros.train.eval_report import markdown, write_reports

    if args.out:
        paths = write_reports(result, args.out)
        if progress:
            progress("wrote " + ", ".join(str(p) for p in paths))
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(markdown(result, tables=("overall",)))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vila-ros")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
