"""``vila-ros train``: run a recipe (config/train/*.yaml). torch is imported inside the handler."""
from __future__ import annotations

import argparse
import os
import sys


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

    from vila_ros.train.eval import register as register_eval  # `vila-ros eval` (light import: no torch)

    register_eval(subparsers)


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vila-ros")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
