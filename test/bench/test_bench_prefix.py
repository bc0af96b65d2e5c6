"""`vila-ros bench prefix` on the tiny checkpoint, in a subprocess: both timings, the ratio, identical outputs."""
import json
import subprocess
import sys


def test_bench_prefix_tiny(tiny_dir, tmp_path):
    out = tmp_path / "prefix.json"
    proc = subprocess.run([sys.executable, "-m", "vila_ros.cli", "bench", "prefix", "--model", str(tiny_dir),
                           "--json", str(out), "--repeats", "2", "--new-tokens", "4", "--threads", "1"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["ttft_ms"]["cached"]["median"] > 0 and report["ttft_ms"]["uncached"]["median"] > 0
    assert report["speedup"] > 0 and report["cached_over_uncached"] > 0
    assert report["outputs_identical"] is True and report["few_shot_examples"] >= 1
    assert 0 < report["cached_prefix_tokens"] <= report["prefix_tokens"] < report["prompt_positions"]
    assert report["machine"]["cpu_count"] >= 1 and report["machine"]["torch_threads"] == 1
