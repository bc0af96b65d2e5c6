"""``vila-ros bench resize``: the OpenCV resize option against the exact PIL bicubic one (model/preprocess.py).

Part 1, pixels: simulator frames at camera sizes (and uniform noise, the worst case for a resize) preprocessed both
ways at the default model's input size and at SigLIP's 384; the deviation on the normalised scale ([-1, 1]) and the
time per frame of each. Part 2, answers: the model describes and checks alerts on simulator clips rendered at camera
size, once per resize; how many answers change, and each resize's agreement with the clips' truth.
"""
from __future__ import annotations

import time
from typing import Any

CAMERA_SIZES = ((640, 480), (1920, 1080))
TOWER_SIZES = (112, 384)


def add_parser(bench_subparsers: Any) -> None:
    p = bench_subparsers.add_parser("resize", help="OpenCV vs PIL bicubic preprocessing: deviation, time, answers")
    p.add_argument("--model", default="", help="checkpoint (default: the embedded default model)")
    p.add_argument("--json", required=True, help="output JSON file")
    p.add_argument("--clips", type=int, default=32, help="simulator clips of the answers part (test split)")
    p.add_argument("--frames", type=int, default=6, help="frames per size in the pixels part")
    p.add_argument("--camera", default="640x480", help="render size of the answers part (the demo's bags)")
    p.set_defaults(func=run)


def _deviation(frames: list, size: int) -> dict[str, float]:
    import numpy as np

    from vila_ros.model.preprocess import ImageProcessor

    pil = ImageProcessor(size=size, resize="pil")(frames).numpy()
    cv = ImageProcessor(size=size, resize="opencv")(frames).numpy()
    diff = np.abs(pil - cv)
    return {"max_abs": round(float(diff.max()), 4), "mean_abs": round(float(diff.mean()), 5),
            "p999_abs": round(float(np.quantile(diff, 0.999)), 4)}


def _ms_per_frame(frames: list, size: int, resize: str, repeats: int = 3) -> float:
    from vila_ros.model.preprocess import ImageProcessor

    proc = ImageProcessor(size=size, resize=resize)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for frame in frames:  # the resize alone: the normalisation after it is the same for both
            proc.prepare(frame)
        best = min(best, (time.perf_counter() - t0) * 1000.0 / len(frames))
    return round(best, 2)


def pixels(num_frames: int) -> dict[str, Any]:
    import numpy as np

    from vila_ros.sim import split_seeds
    from vila_ros.sim.clips import make_clip

    out: dict[str, Any] = {}
    rng = np.random.default_rng(0)
    for width, height in CAMERA_SIZES:
        sim = [make_clip(seed, num_frames=1, size=(width, height)).frames[0]
               for seed in split_seeds("test", num_frames)]
        noise = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(2)]
        for size in TOWER_SIZES:
            out[f"{width}x{height}_to_{size}"] = {
                "sim": _deviation(sim, size), "noise": _deviation(noise, size),
                "resize_ms_per_frame": {r: _ms_per_frame(sim, size, r) for r in ("pil", "opencv")}}
    return out


def answers(model_dir: str, clips: int, camera: tuple[int, int]) -> dict[str, Any]:
    from vila_ros import tasks
    from vila_ros.engine import GenerationConfig, create_engine
    from vila_ros.resources import resolve_model_dir
    from vila_ros.sim import split_seeds
    from vila_ros.sim.clips import make_clip

    engine = create_engine(resolve_model_dir(model_dir))
    processor = engine.model.image_processor
    trained = processor.resize
    rows = {r: {"caption": [], "alert": []} for r in ("pil", "opencv")}
    truths = []
    cfg = {"caption": GenerationConfig(max_new_tokens=96), "alert": GenerationConfig(max_new_tokens=48)}
    prompts = {"caption": tasks.DESCRIBE_PROMPT, "alert": tasks.ALERT_PROMPT}
    for seed in split_seeds("test", clips):
        clip = make_clip(seed, num_frames=engine.num_video_frames, size=camera)
        truths.append({"caption": clip.truth.caption, "alert": clip.truth.alert_answer})
        for resize in rows:
            engine.model.image_processor = processor.with_resize(resize)
            feats = engine.encode_frames(clip.frames)
            for kind in ("caption", "alert"):
                rows[resize][kind].append(engine.generate(prompts[kind], feats, cfg[kind]).text.strip())
    engine.model.image_processor = processor
    result: dict[str, Any] = {"model_resize": trained, "clips": clips, "camera": f"{camera[0]}x{camera[1]}"}
    for kind in ("caption", "alert"):
        same = sum(a == b for a, b in zip(rows["pil"][kind], rows["opencv"][kind]))
        result[f"{kind}_identical_fraction"] = round(same / clips, 3)
        for resize in rows:
            right = sum(a == t[kind] for a, t in zip(rows[resize][kind], truths))
            result[f"{kind}_exact_vs_truth_{resize}"] = round(right / clips, 3)
    return result


def run(args: Any) -> int:
    from vila_ros.bench.common import write_report

    width, height = (int(v) for v in args.camera.lower().split("x"))
    report = {"pixels": pixels(args.frames), "answers": answers(args.model, args.clips, (width, height))}
    worst = max(v["sim"]["max_abs"] for v in report["pixels"].values())
    headline = {"sim_max_abs_deviation": worst,
                "caption_identical_fraction": report["answers"]["caption_identical_fraction"],
                "alert_identical_fraction": report["answers"]["alert_identical_fraction"]}
    write_report(args.json, report, "Image resize: OpenCV option vs PIL bicubic (exact)", headline)
    return 0
