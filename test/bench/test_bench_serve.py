"""`vila-ros bench serve` runs end to end on the tiny checkpoint and writes its report."""
import json

from vila_ros.cli import main


def test_bench_serve_writes_report(tiny_dir, tmp_path):
    out = tmp_path / "serve.json"
    assert main(["bench", "serve", "--model", str(tiny_dir), "--json", str(out), "--clients", "1,2",
                 "--requests", "2", "--new-tokens", "2", "--frames", "1"]) == 0
    report = json.loads(out.read_text())
    assert report["in_process"]["requests_per_s"] > 0
    assert set(report["served"]) == {"1", "2"}
    assert all(0 < r["p50_ms"] <= r["p99_ms"] for r in report["served"].values())
