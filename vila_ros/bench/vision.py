"""``vila-ros bench vision``: ms per frame for the vision tower + projector, and frames encoded per description.

Rows, all fp32 on CPU, same pixels, same run (runs alternate so background load hits every row alike):
  torch_encode_frames  TorchEngine.encode_frames (preprocess + tower + projector), uint8 frames in
  torch                VisionEncoder (tower + projector, vila_ros.quant.trtllm), pixels in
  onnxruntime          the same VisionEncoder exported to ONNX (an existing ``--onnx`` file, else exported here
                       with the exporter's settings) run by onnxruntime, pixels in; skipped if onnxruntime is absent
each at batch 1 and batch 8 (ms per frame = median call time / batch, over ``--frames`` frames per row).
Sliding window: 8-frame windows sliding by one frame through the real CameraBuffer + InferenceWorker.describe path
(which calls ``_encode_missing``); the engine's encode_frames is counted. After the first window every
description must encode exactly 1 new frame in 1 call.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable


def add_parser(bench_subparsers: Any) -> None:
    p = bench_subparsers.add_parser("vision", help="vision tower + projector ms/frame (torch, onnxruntime), "
                                                   "frames encoded per sliding-window description")
    p.add_argument("--model", required=True, help="VILA1.5 checkpoint directory")
    p.add_argument("--json", required=True, help="output JSON file")
    p.add_argument("--frames", type=int, default=32, help="frames timed per row and batch size (median of calls)")
    p.add_argument("--window", type=int, default=8, help="frames per description in the sliding-window check")
    p.add_argument("--slides", type=int, default=8, help="descriptions after the first window")
    p.add_argument("--onnx", default="", help="an existing vision.onnx (tower + projector); default: export here")
    p.add_argument("--threads", type=int, default=0, help="torch/onnxruntime threads (0 = library default)")
    p.set_defaults(func=run)


def _time_calls(fn: Callable[[int], Any], batch: int, calls: int) -> list[float]:
    """ms per frame of each of ``calls`` calls of ``fn(batch)``."""
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn(batch)
        times.append((time.perf_counter() - t0) * 1000.0 / batch)
    return times


def _export_onnx(model: Any, path: Path) -> None:
    from vila_ros.quant.trtllm import write_vision_onnx

    write_vision_onnx(model, path)


def sliding_window_check(engine: Any, window: int, slides: int, image_size: int) -> dict[str, Any]:
    """Feed window + slides frames one by one into a CameraBuffer; describe after each once the window is full."""
    import numpy as np

    from vila_ros.ros.frame_buffer import CameraBuffer, Frame
    from vila_ros.ros.worker import InferenceWorker, WorkerSettings
    from vila_ros.tasks import NANOSECONDS

    calls: list[int] = []

    class CountingEngine:
        def __init__(self, inner: Any) -> None:
            self._inner = inner

        def __getattr__(self, name: str) -> Any:
            return getattr(self._inner, name)

        def encode_frames(self, frames: Any) -> Any:
            calls.append(len(frames))
            return self._inner.encode_frames(frames)

    interval = 0.25
    buffer = CameraBuffer("cam", keep_interval_s=interval, max_age_s=60.0, max_frames=window, max_bytes=1 << 30)
    settings = WorkerSettings(num_frames=window, min_frames=window, describe_max_new_tokens=2,
                              alert_period_s=0.0, describe_period_s=interval)
    worker = InferenceWorker(CountingEngine(engine), {"cam": buffer}, settings, lambda d: None, lambda a: None)
    rng = np.random.default_rng(0)
    per_description = []
    for i in range(window + slides):
        stamp = int(i * interval * NANOSECONDS)
        assert buffer.wants(stamp)
        buffer.add(Frame("cam", stamp, "cam", rng.integers(0, 256, (image_size, image_size, 3), dtype=np.uint8)))
        if len(buffer) < window:
            continue
        before_calls, before_frames = len(calls), sum(calls)
        description = worker.describe("cam")
        assert len(description.frames) == window
        per_description.append({"encoder_calls": len(calls) - before_calls,
                                "frames_encoded": sum(calls) - before_frames})
    after_first = per_description[1:]
    return {
        "window": window, "descriptions": len(per_description),
        "first_window": per_description[0],
        "after_first_window": {
            "encoder_calls_per_description": max(d["encoder_calls"] for d in after_first) if after_first else None,
            "frames_encoded_per_description": max(d["frames_encoded"] for d in after_first) if after_first else None,
        },
        "per_description": per_description,
        "total_frames_encoded": sum(calls), "total_frames_fed": window + slides,
        "ok": bool(after_first) and all(d == {"encoder_calls": 1, "frames_encoded": 1} for d in after_first),
    }


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from vila_ros.engine.torch_engine import TorchEngine
    from vila_ros.quant.trtllm import VisionEncoder

    if args.threads:
        torch.set_num_threads(args.threads)
    engine = TorchEngine.from_dir(args.model, precision="fp32")
    model = engine.model
    size = model.config.image_size
    rng = np.random.default_rng(0)
    batches = (1, 8)
    frames_u8 = rng.integers(0, 256, (max(batches), size, size, 3), dtype=np.uint8)
    pixels = model.preprocess(list(frames_u8)).float()
    enc = VisionEncoder(model).float().eval()

    @torch.inference_mode()
    def torch_pixels(b: int) -> Any:
        return enc(pixels[:b])

    def torch_frames(b: int) -> Any:
        return engine.encode_frames(list(frames_u8[:b]))

    rows: dict[str, Callable[[int], Any]] = {"torch_encode_frames": torch_frames, "torch": torch_pixels}
    onnx_info: dict[str, Any] = {"available": False}
    tmp = None
    try:
        import onnxruntime as ort
    except ImportError:
        ort = None
        onnx_info["reason"] = "onnxruntime not installed"
    if ort is not None:
        if args.onnx:
            onnx_path = Path(args.onnx)
            onnx_info["source"] = f"file {onnx_path}"
        else:
            tmp = tempfile.TemporaryDirectory(prefix="vila_ros_bench_vision_")
            onnx_path = Path(tmp.name) / "vision.onnx"
            t0 = time.perf_counter()
            _export_onnx(model, onnx_path)
            onnx_info["source"] = "exported in-process (VisionEncoder, opset 17, fp32)"
            onnx_info["export_s"] = round(time.perf_counter() - t0, 2)
        options = ort.SessionOptions()
        if args.threads:
            options.intra_op_num_threads = args.threads
        session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        pixels_np = pixels.numpy()

        def onnx_pixels(b: int) -> Any:
            return session.run(["features"], {"pixels": pixels_np[:b]})[0]

        with torch.inference_mode():
            ref = enc(pixels).numpy()
        got = onnx_pixels(max(batches))
        onnx_info.update(available=True, version=ort.__version__, max_abs_error=float(np.abs(got - ref).max()),
                         max_abs_ref=float(np.abs(ref).max()))
        rows["onnxruntime"] = onnx_pixels

    for fn in rows.values():  # warm-up
        for b in batches:
            fn(b)
    samples: dict[str, dict[int, list[float]]] = {name: {b: [] for b in batches} for name in rows}
    rounds = max(3, args.frames // max(batches))
    for _ in range(rounds):  # each round: max(batches) frames per row and batch; rows alternate within a round
        for b in batches:
            for name, fn in rows.items():
                samples[name][b].extend(_time_calls(fn, b, max(batches) // b))
    ms = {name: {f"batch{b}_ms_per_frame": round(statistics.median(v), 3) for b, v in per.items()}
          for name, per in samples.items()}
    ratios: dict[str, float] = {}
    for b in batches:
        key = f"batch{b}_ms_per_frame"
        if "onnxruntime" in ms:
            ratios[f"onnxruntime_over_torch_batch{b}"] = round(ms["onnxruntime"][key] / ms["torch"][key], 3)
        ratios[f"preprocess_overhead_batch{b}"] = round(ms["torch_encode_frames"][key] / ms["torch"][key], 3)
    torch_ms = ms["torch"]
    ratios["torch_batch8_over_batch1"] = round(torch_ms["batch8_ms_per_frame"] / torch_ms["batch1_ms_per_frame"], 3)
    if tmp is not None:
        tmp.cleanup()

    sliding = sliding_window_check(engine, args.window, args.slides, size)
    report = {
        "model": engine.model_id,
        "image_size": size, "tokens_per_image": engine.tokens_per_image,
        "vision_parameters": sum(p.numel() for p in enc.parameters()),
        "precision": "fp32", "frames_per_row": args.frames,
        "ms": ms, "ratios": ratios, "onnx": onnx_info, "sliding_window": sliding,
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "processor": platform.processor() or platform.machine(), "python": platform.python_version()},
        "versions": {"torch": torch.__version__},
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("model", "ms", "ratios")} |
                     {"sliding_window_ok": sliding["ok"],
                      "after_first_window": sliding["after_first_window"]}))
    return 0 if sliding["ok"] else 1
