"""`vila-ros bench resize` on the tiny checkpoint: the deviation rows and the answers part."""
import json

from vila_ros.cli import main


def test_bench_resize_tiny(tiny_dir, tmp_path, capsys):
    out = tmp_path / "resize.json"
    assert main(["bench", "resize", "--model", str(tiny_dir), "--json", str(out), "--clips", "2", "--frames", "1",
                 "--camera", "160x120"]) == 0
    capsys.readouterr()
    report = json.loads(out.read_text())
    row = report["pixels"]["1920x1080_to_384"]
    assert 0 < row["sim"]["mean_abs"] <= row["sim"]["p999_abs"] <= row["sim"]["max_abs"] <= 2
    assert row["noise"]["max_abs"] > 0
    assert min(row["resize_ms_per_frame"].values()) > 0
    answers = report["answers"]
    assert answers["model_resize"] == "pil" and answers["clips"] == 2 and answers["camera"] == "160x120"
    for key in ("caption_identical_fraction", "alert_identical_fraction", "alert_exact_vs_truth_opencv"):
        assert 0 <= answers[key] <= 1
    assert out.with_suffix(".md").is_file()
