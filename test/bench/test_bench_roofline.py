"""`vila-ros bench roofline` on the tiny checkpoint, in a subprocess: the bandwidth probe, bytes per token and the
fraction of bandwidth are there and agree with each other (not how fast this machine is)."""
import json
import statistics
import subprocess
import sys

from vila_ros.model.checkpoint import load_vila


def test_bench_roofline_tiny(tiny_dir, tmp_path):
    out = tmp_path / "roofline.json"
    proc = subprocess.run([sys.executable, "-m", "vila_ros.cli", "bench", "roofline", "--model", str(tiny_dir),
                           "--json", str(out), "--group", "64", "--new-tokens", "6", "--repeats", "1",
                           "--threads", "1", "--buffer-mib", "64"], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    bandwidth = report["bandwidth"]["read_bytes_s"]
    assert bandwidth > 1e8 and report["bandwidth"]["buffer_bytes"] == 64 << 20
    llm = load_vila(tiny_dir).llm
    assert report["llm_parameters"] == sum(p.numel() for p in llm.parameters())  # int4 weights counted too
    for name in ("bf16", "int4"):
        row = report[name]
        per_token = row["bytes_per_token"]
        assert per_token["total"] == per_token["weights"] + per_token["kv_cache"] > 0
        achieved = row["achieved_bytes_s"]
        assert abs(achieved - row["decode_tok_s"] * per_token["total"]) <= 0.01 * achieved + 1
        # every timed decode against the mean of the probes right before and right after it
        probes = row["bandwidth_probes_read_bytes_s"]
        assert all(len(pair) == 2 and min(pair) > 1e8 for pair in probes)
        pairs = sorted((report["new_tokens"] - 1) * per_token["total"] / (t * (before + after) / 2)
                       for t, (before, after) in zip(row["timed_decode_s"], probes))
        assert len(pairs) == report["repeats"]
        assert abs(row["bandwidth_fraction"] - statistics.median(pairs)) < 2e-3
        assert row["bandwidth_fraction_range"] == [round(pairs[0], 3), round(pairs[-1], 3)]
        assert abs(row["roofline_tok_s"] - bandwidth / per_token["total"]) <= 1e-3 * row["roofline_tok_s"] + 1e-3
    # the rows alternate: the probe after the bf16 decode is the one before the int4 decode
    bf16_probes, int4_probes = (report[name]["bandwidth_probes_read_bytes_s"] for name in ("bf16", "int4"))
    assert bf16_probes[0][1] == int4_probes[0][0]
    assert report["int4"]["bytes_per_token"]["weights"] < report["bf16"]["bytes_per_token"]["weights"]
    assert "fraction of bandwidth" in out.with_suffix(".md").read_text()
