"""`vila-ros bench cameras`, model part only and short (1 and 2 cameras, 1 period), in a subprocess: checks that
every figure is there and consistent, not how fast."""
import json
import subprocess
import sys


def test_bench_cameras_short(tmp_path):
    out = tmp_path / "cameras.json"
    proc = subprocess.run([sys.executable, "-m", "vila_ros.cli", "bench", "cameras", "--json", str(out),
                           "--cameras", "1,2", "--periods", "2", "--node-duration", "0", "--width", "320",
                           "--height", "240"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    periods = report["model_time_per_period"]
    for count in ("1", "2"):
        batched, alone = periods[count]["batched"], periods[count]["one_at_a_time"]
        # 2 periods of 1 s: two alert checks and one description per camera, whichever way they run
        for mode in (batched, alone):
            assert mode["alert_checks"] == 2 * int(count) and mode["descriptions"] == int(count)
            assert mode["ms_per_period"] > 0 and len(mode["ms_per_period_each"]) == 2
        # Per period every camera's alert check, and every other period its description, in one call; fewer than
        # three generations (one camera, or two cameras' alert checks alone) run one by one.
        assert alone["batches"] == 0
        assert (batched["batches"], batched["batched_generations"]) == ((0, 0) if count == "1" else (1, 4))
    ratios = report["ratios"]
    assert ratios["batched_1_over_batched_1"] == 1.0
    assert ratios["batched_2_over_batched_1"] == round(periods["2"]["batched"]["ms_per_period"]
                                                       / periods["1"]["batched"]["ms_per_period"], 3)
    assert "node" not in report and report["target"]["met"] is None  # no 4-camera figure asked for
