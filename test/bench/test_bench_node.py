"""`vila-ros bench node`, short and small (8 s, 640x360 at 15 fps), in a subprocess: a real node process, two camera
processes over DDS, the embedded default model. Checks that every figure is there and consistent, not how fast."""
import json
import subprocess
import sys


def _summary_ok(stats: dict, positive: bool = True) -> None:
    assert stats["count"] > 0
    assert 0 <= stats["p50"] <= stats["p99"] <= stats["max"] * 1.02 + 1e-6  # a percentile is exact to its 2 % bin
    assert stats["mean"] <= stats["max"] + 1e-6
    if positive:
        assert stats["p50"] > 0


def test_bench_node_short(tmp_path):
    out, markdown = tmp_path / "node.json", tmp_path / "summary.md"
    proc = subprocess.run([sys.executable, "-m", "vila_ros.cli", "bench", "node", "--json", str(out),
                           "--markdown", str(markdown), "--duration", "8", "--width", "640", "--height", "360",
                           "--fps", "15", "--ingest-frames", "30", "--sample-period", "1", "--warmup", "2"],
                          capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["config"]["dds_profile"].endswith("config/fastdds_local_large_frames.xml")

    # a) ingest: every encoding, kept and skipped, on a 15 fps stream kept at the clip rate (4 fps)
    ingest = report["ingest"]
    assert ingest["frame_period_ms"] == round(1000 / 15, 3) and ingest["clip_fps"] == 4.0
    for encoding in ("rgb8", "bgr8", "jpeg"):
        row = ingest[encoding]
        assert row["decode_errors"] == 0 and row["payload_bytes"] > 0
        assert row["kept"]["count"] == 8 and row["skipped"]["count"] == 22  # 30 frames at 15 fps, every 4th-ish kept
        for outcome in ("kept", "skipped"):
            wall, cpu = row[outcome]["wall_ms"], row[outcome]["cpu_ms"]
            assert 0 < wall["p50"] <= wall["p99"] <= wall["max"] and 0 <= cpu["p50"] <= cpu["max"]
            # of the exact period (the reported frame_period_ms is rounded to 3 places: dividing by it flipped the
            # 5th place now and then)
            assert row[outcome]["wall_fraction_of_period"] == round(wall["p50"] / (1000 / 15), 5)
        assert row["kept"]["wall_ms"]["p50"] > row["skipped"]["wall_ms"]["p50"]  # decoding and shrinking cost more
        assert 0 < row["core_share_at_fps"] < 1
    assert ingest["rgb8"]["payload_bytes"] >= 640 * 360 * 3  # CDR: the pixels plus the header
    assert ingest["jpeg"]["payload_bytes"] < ingest["rgb8"]["payload_bytes"]

    # b) load: both cameras published, the node received (some may drop: best effort) and timed its callbacks
    load = report["load"]
    assert set(load["cameras"]) == {"front", "rear"}
    for camera in load["cameras"].values():
        assert camera["published"] > 60 and 0 < camera["received"] <= camera["published"]
        assert camera["dropped"] == camera["published"] - camera["received"]
        assert camera["kept"] >= 8 and camera["decode_errors"] == 0
        # Raw 640x360 frames (675 KiB) need the shipped shared-memory profile: Fast DDS's defaults lost 95 % of them.
        assert camera["drop_rate"] <= 0.25, camera
        _summary_ok(camera["publish_to_callback_end_ms"])
        assert camera["callback_ms"]["count"] == camera["received"]
        assert camera["kept_callback_ms"]["count"] == camera["kept"]
        for key in ("callback_ms", "kept_callback_ms", "skipped_callback_ms", "kept_cpu_ms", "skipped_cpu_ms"):
            _summary_ok(camera[key], positive=key != "skipped_cpu_ms")
        # the callback ends after the frame was published
        assert camera["publish_to_callback_end_ms"]["p50"] >= camera["callback_ms"]["p50"] * 0.9
    assert load["descriptions_published"] >= 1 and load["descriptions_received"] == load["descriptions_published"]
    assert load["alert_checks"] >= 1 and load["inference_failures"] == 0 and load["node_cpu_percent"] > 0

    # c) memory and queues sampled over the run
    rss = report["memory"]["rss_mib"]
    assert 50 < rss["start"] <= rss["max"] and rss["end"] <= rss["max"] and rss["slope_per_min"] is not None
    assert isinstance(report["memory"]["flat"], bool) and len(report["memory"]["samples"]) >= 6
    queues = report["queues"]
    for name in ("buffer.front.frames", "buffer.rear.bytes", "worker.queries", "history.records.descriptions",
                 "tracker.tracks", "stats.kept.front"):
        assert name in queues, sorted(queues)
        assert queues[name]["verdict"] in ("flat", "bounded", "growing")
        assert queues[name]["start"] <= queues[name]["max"] and queues[name]["end"] <= queues[name]["max"]
    assert queues["buffer.front.frames"]["bound"] == 64 and 8 <= queues["buffer.front.frames"]["max"] <= 64
    assert queues["history.records.descriptions"]["bound"] == 1000
    assert isinstance(report["queues_flat"], bool)

    # d) description latency, its model time, and what is left
    d = report["description_overhead"]
    assert d["descriptions_timed"] >= 1 and d["unmatched"] == 0 and d["target_ms"] == 5.0
    for key in ("latency_ms", "model_ms", "minus_model_ms", "minus_all_model_ms", "newest_frame_ingest_ms"):
        _summary_ok(d[key])
        assert d[key]["count"] == d["descriptions_timed"]
    assert d["latency_ms"]["max"] >= d["model_ms"]["max"] * 0.98
    assert d["minus_all_model_ms"]["p50"] <= d["minus_model_ms"]["p50"] * 1.02 + 1e-6  # less model time subtracted
    assert set(d["meets_target"]) == {"minus_model_p99", "minus_all_model_p99", "minus_all_model_p50"}

    assert report["node_exit_code"] == 0
    text = markdown.read_text()
    for heading in ("## a) ingest", "## b) two cameras", "## c) memory", "## d) description latency"):
        assert heading in text
