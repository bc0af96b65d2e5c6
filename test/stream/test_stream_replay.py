"""`eval-stream --replay`: the checks a --probabilities run recorded, decided again through the node's tracker,
give exactly what the node published at the same settings, and other settings change the decisions."""
import json

import pytest

from vila_ros.resources import DEFAULT_MODEL_DIR

pytestmark = pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "config.json").is_file(),
                                reason="the embedded default model is not present")


def test_a_replay_of_recorded_checks_publishes_what_the_node_published(tmp_path, capsys):
    from vila_ros.cli import main
    from vila_ros.tools.stream_eval import evaluate
    from vila_ros.tools.stream_replay import redecide

    split = {"split": "stream_val", "minutes": 2.0, "stream_minutes": 1.0}
    stored = json.loads((DEFAULT_MODEL_DIR / "alert_thresholds.json").read_text())
    # Recorded at a clip rate other than the default: frames-to-alert counts the run's frames, not the default's.
    rate = {"clip_fps": 5.0}
    # Recorded: every check's probabilities (in this mode the run's own alerts follow the generated answers).
    recorded = evaluate(**split, overrides=rate, out_dir=tmp_path / "recorded", probabilities=True, thresholds=stored)
    node = evaluate(**split, overrides=rate)  # the node deciding at the stored thresholds
    # Recorded while the node decides at thresholds (--probabilities --set alert_thresholds_file=...): the same
    # checks, and the node's own alerts.
    both = evaluate(**split, overrides={**rate, "alert_thresholds_file": "model"}, probabilities=True)

    def checks(run):
        return [(c["camera"], c["stamps_ns"], {k: round(p, 5) for k, p in c["probabilities"].items()})
                for c in run["records"]["checks"]]

    assert checks(both) and checks(both) == checks(recorded)
    replayed = redecide(tmp_path / "recorded", **split)

    def published(alerts):
        return sorted((a["camera"], a["category"], a["state"], a["stamp_ns"]) for a in alerts)

    assert any(a["state"] == 0 for a in node["records"]["alerts"])
    assert published(replayed["records"]) == published(node["records"]["alerts"])
    assert published(both["records"]["alerts"]) == published(node["records"]["alerts"])
    figures = ("recall", "precision", "alert_begins", "false_alerts", "frames_to_alert_median")
    assert {k: replayed[k] for k in figures} == {k: node["alerts"][k] for k in figures}

    # Tracker settings change what is published: three more checks without a category before its END.
    later = redecide(tmp_path / "recorded", **split, overrides={"alert_clear": 5})
    ends = [a for a in later["records"] if a["state"] == 2]
    assert ends and published(later["records"]) != published(replayed["records"])

    # The command line: a run recorded and replayed; replay.json; another split or a window setting is refused.
    thresholds = str(DEFAULT_MODEL_DIR / "alert_thresholds.json")
    run = tmp_path / "cli_run"
    assert main(["eval-stream", "--split", "stream_val", "--minutes", "1", "--thresholds", thresholds,
                 "--out", str(run)]) == 0
    common = ["eval-stream", "--replay", str(run), "--split", "stream_val"]
    capsys.readouterr()
    assert main([*common, "--minutes", "1", "--set", "alert_clear=3", "--out", str(tmp_path / "r")]) == 0
    assert "event recall (95% interval)" in capsys.readouterr().out
    replay = json.loads((tmp_path / "r" / "replay.json").read_text())
    assert isinstance(replay["false_alert_list"], list)
    assert len(replay["missed"]) == replay["events"] - replay["alerted"]
    assert main([*common, "--minutes", "2", "--out", str(tmp_path / "r")]) == 1
    assert "give the run's own --split and --minutes" in capsys.readouterr().err
    assert main([*common, "--minutes", "1", "--set", "num_frames=4", "--out", str(tmp_path / "r")]) == 1
    assert "cannot change num_frames" in capsys.readouterr().err


def test_a_run_checked_every_half_second_replayed_every_second_is_the_node_at_one_second(tmp_path):
    from vila_ros.tools.stream_eval import evaluate
    from vila_ros.tools.stream_replay import redecide

    split = {"split": "stream_val", "minutes": 2.0, "stream_minutes": 1.0}
    often = evaluate(**split, overrides={"alert_period_s": 0.5, "alert_thresholds_file": "model"},
                     out_dir=tmp_path / "often", probabilities=True)
    node = evaluate(**split)  # the default cadence, 1 s
    stamps = sorted(c["stamps_ns"][-1] for c in often["records"]["checks"] if c["camera"] == "road0")
    assert {b - a for a, b in zip(stamps, stamps[1:])} == {500_000_000}

    def published(alerts):
        return sorted((a["camera"], a["category"], a["state"], a["stamp_ns"]) for a in alerts)

    replayed = redecide(tmp_path / "often", **split, overrides={"alert_period_s": 1.0})
    assert any(a["state"] == 0 for a in node["records"]["alerts"])
    assert published(replayed["records"]) == published(node["records"]["alerts"])
    # Thresholds chosen on one camera, scored on the other, at the replayed cadence: every event scored once a fold.
    folds = redecide(tmp_path / "often", **split, overrides={"alert_period_s": 1.0}, halvings=2)["cross_validation"]
    assert set(folds["rules"]) >= {"pooled"} and folds["pooled"]["events"] == 2 * replayed["events"] > 0
    assert published(redecide(tmp_path / "often", **split)["records"]) == published(often["records"]["alerts"])
    with pytest.raises(ValueError, match="can check less often, not every 0.25 s"):
        redecide(tmp_path / "often", **split, overrides={"alert_period_s": 0.25})
