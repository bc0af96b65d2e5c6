"""`vila-ros bench window` on the tiny checkpoint, in a subprocess: every stage timed, and the KV-reuse analysis
(the first layer's values of shared frames unchanged by the slide, later layers' changed)."""
import json
import subprocess
import sys


def test_bench_window_tiny(tiny_dir, tmp_path):
    out = tmp_path / "window.json"
    proc = subprocess.run([sys.executable, "-m", "vila_ros.cli", "bench", "window", "--model", str(tiny_dir),
                           "--json", str(out), "--new-tokens", "4", "--windows", "2", "--repeats", "1",
                           "--threads", "1"], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    seconds = report["seconds"]
    assert all(seconds[key] > 0 for key in ("vision_window", "vision_newest_frame", "prefill", "decode"))
    assert seconds["total_sliding_description"] < seconds["total_first_description"]
    assert report["prompt_positions"] > report["frames"] * report["tokens_per_image"]
    change = report["kv_reuse"]["value_change_per_layer"]
    assert len(change) >= 2
    assert change[0] < 1e-4 < max(change[1:])  # layer 0 reads only the token itself; later layers read the prefix
    assert 0 <= report["kv_reuse"]["greedy_answers_equal"] <= 2
    assert report["kv_reuse"]["prefill_s_reusing_shared_frames"] > 0
    assert out.with_suffix(".md").exists()
