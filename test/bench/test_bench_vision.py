"""`vila-ros bench vision` on the tiny checkpoint, in a subprocess: the rows, the ratios, the sliding-window count."""
import json
import subprocess
import sys


def test_bench_vision_tiny(tiny_dir, tmp_path):
    out = tmp_path / "vision.json"
    proc = subprocess.run([sys.executable, "-m", "vila_ros.cli", "bench", "vision", "--model", str(tiny_dir),
                           "--json", str(out), "--frames", "8", "--slides", "3", "--threads", "1"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    for row in ("torch", "torch_encode_frames"):
        assert report["ms"][row]["batch1_ms_per_frame"] > 0 and report["ms"][row]["batch8_ms_per_frame"] > 0
    assert "torch_batch8_over_batch1" in report["ratios"]
    if report["onnx"]["available"]:
        assert report["ms"]["onnxruntime"]["batch8_ms_per_frame"] > 0
        assert report["ratios"]["onnxruntime_over_torch_batch1"] > 0
        assert report["onnx"]["max_abs_error"] < 1e-3 * max(1.0, report["onnx"]["max_abs_ref"])
    sliding = report["sliding_window"]
    assert sliding["ok"] and sliding["descriptions"] == 4
    assert sliding["first_window"] == {"encoder_calls": 1, "frames_encoded": 8}
    assert sliding["after_first_window"] == {"encoder_calls_per_description": 1, "frames_encoded_per_description": 1}
    assert sliding["total_frames_encoded"] == sliding["total_frames_fed"] == 11
    assert report["machine"]["cpu_count"] >= 1 and report["machine"]["torch_threads"] == 1
