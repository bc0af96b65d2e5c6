"""Writers: LLaVA JSON datasets, clips, rosbag2 recordings read back with rosbags, and the CLI."""
import json

import cv2
import numpy as np
import pytest

from vila_ros import tasks
from vila_ros.sim import make_scenario
from vila_ros.sim.writers import JPEG_FORMAT, encode_jpeg, segment_seed, truth_path, write_bag, write_llava_dataset


def _check_llava(path, expect_images):
    records = json.loads(path.read_text())
    assert records and len({r["id"] for r in records}) == len(records)
    for r in records:
        conv = r["conversations"]
        assert [c["from"] for c in conv] == ["human", "gpt"] * (len(conv) // 2) and len(conv) % 2 == 0
        assert all(isinstance(c["value"], str) and c["value"] for c in conv)
        images = r.get("image")
        images = [] if images is None else [images] if isinstance(images, str) else images
        tokens = sum(c["value"].count("<image>") for c in conv)
        assert tokens == len(images)
        assert sum(c["value"].count("<image>") for c in conv if c["from"] == "gpt") == 0
        for name in images:
            f = path.parent / name
            data = f.read_bytes()
            assert data[:2] == b"\xff\xd8"
            img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            assert img.shape == (112, 112, 3)
        if expect_images is not None:
            assert len(images) == expect_images
    return records


@pytest.mark.parametrize("kind,n_images", [("single", 1), ("multi", 2), ("video", 8), ("text", 0)])
def test_llava_datasets(tmp_path, kind, n_images):
    path = write_llava_dataset(tmp_path, kind=kind, split="val", count=6)
    records = _check_llava(path, n_images)
    truths = [json.loads(line) for line in (tmp_path / f"{kind}_val.truth.jsonl").read_text().splitlines()]
    assert [t["id"] for t in truths] == [r["id"] for r in records]
    if kind == "video":
        for r, t in zip(records, truths):
            answers = {c["value"] for c in r["conversations"]}
            assert t["truth"]["alert_answer"] in answers and t["truth"]["caption"] in answers
            assert r["conversations"][0]["value"].startswith("<image>\n" * 8)
    if kind == "single":  # one frame: never the event sentence, never a temporal question
        temporal_q = {q for q, _, temporal in tasks.QA_TEMPLATES.values() if temporal}
        for r in records:
            assert not any(c["value"] in temporal_q for c in r["conversations"])
            assert not any(c["value"].split("\n")[-1] == tasks.ALERT_PROMPT for c in r["conversations"])
    if kind == "text":
        assert all("image" not in r for r in records)


def test_llava_mix_has_several_kinds(tmp_path):
    records = _check_llava(write_llava_dataset(tmp_path, kind="mix", split="train", count=24), None)
    kinds = {r["id"].split("-")[0] for r in records}
    assert {"video", "single"} <= kinds and len(kinds) >= 3


def _read_bag(path):
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_KILTED)
    out = {}
    with Reader(path) as reader:
        for conn, stamp, raw in reader.messages():
            out.setdefault(conn.topic, []).append((stamp, ts.deserialize_cdr(raw, conn.msgtype), conn.msgtype))
    return out


@pytest.mark.parametrize("storage,encoding", [("mcap", "rgb8"), ("sqlite3", "jpeg"), ("mcap", "bgr8")])
def test_bag_round_trip(tmp_path, storage, encoding):
    bag = tmp_path / "run"
    write_bag(bag, cameras=["front", "left"], fps=5.0, size=(80, 60), encoding=encoding, duration=3.0, seed=4,
              storage=storage, segment=2.0)
    side = json.loads(truth_path(bag).read_text())
    msgs = _read_bag(bag)
    suffix = "/compressed" if encoding == "jpeg" else ""
    assert set(msgs) == {f"/cameras/{c}/image_raw{suffix}" for c in ("front", "left")}
    for ci, cam in enumerate(("front", "left")):
        entries = msgs[side["cameras"][cam]["topic"]]
        assert len(entries) == 15 == side["num_frames"]
        stamps = [s for s, _, _ in entries]
        assert all(b > a for a, b in zip(stamps, stamps[1:]))
        assert stamps[1] - stamps[0] == 200_000_000
        for k, (stamp, msg, msgtype) in enumerate(entries):
            assert msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == stamp
            assert msg.header.frame_id == f"{cam}_camera"
            seg = min(int(k / 5.0 // 2.0), 1)
            expected = make_scenario(segment_seed(4, ci, seg), duration=2.0).render(k / 5.0 - 2.0 * seg, 80, 60)
            if encoding == "jpeg":
                assert msgtype == "sensor_msgs/msg/CompressedImage" and msg.format == JPEG_FORMAT
                bgr = cv2.imdecode(np.asarray(msg.data, np.uint8), cv2.IMREAD_COLOR)
                assert bgr.shape == (60, 80, 3)
                assert bytes(np.asarray(msg.data, np.uint8)) == encode_jpeg(expected)  # exactly this frame
                assert np.abs(bgr[:, :, ::-1].astype(int) - expected).mean() < 20  # tiny detailed frames: lossy
            else:
                assert msg.encoding == encoding and (msg.height, msg.width, msg.step) == (60, 80, 240)
                pix = np.asarray(msg.data, np.uint8).reshape(60, 80, 3)
                assert np.array_equal(pix if encoding == "rgb8" else pix[:, :, ::-1], expected)
        segs = side["cameras"][cam]["segments"]
        assert [s["start_ns"] for s in segs] == [side["start_ns"], side["start_ns"] + 2 * 10**9]
        for s in segs:
            assert s["seed"] == segment_seed(4, ci, s["index"])
            for e in s["events"]:
                assert s["start_ns"] <= e["start_ns"] < s["end_ns"] and e["category"] in tasks.CATEGORIES


def test_bag_sidecar_events_match_the_scenarios(tmp_path):
    bag = tmp_path / "long.mcap"
    write_bag(bag, cameras=["front"], fps=2.0, size=(32, 24), duration=60.0, seed=9, segment=10.0)
    side = json.loads(truth_path(bag).read_text())
    cam = side["cameras"]["front"]
    assert len(cam["segments"]) == 6 and cam["events"]
    for seg in cam["segments"]:
        s = make_scenario(seg["seed"], duration=10.0)
        assert [e["category"] for e in seg["events"]] == ([s.event.category] if s.event else [])
        for e in seg["events"]:
            assert e["start_ns"] == seg["start_ns"] + round(s.event.start * 1e9)
            assert e["severity"] == tasks.default_severity(e["category"])
    with pytest.raises(FileExistsError):
        write_bag(bag, duration=1.0)


def test_cli_clip_dataset_bag_and_help(tmp_path, capsys):
    from vila_ros.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["sim", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "camera_blocked" in out and "bag" in out and "dataset" in out
    assert main(["sim", "clip", "--seed", "3", "--category", "red_light", "--out", str(tmp_path / "c")]) == 0
    truth = json.loads((tmp_path / "c" / "truth.json").read_text())
    assert truth["events"][0]["category"] == "red_light"
    assert len(list((tmp_path / "c").glob("frame_*.jpg"))) == 8
    assert main(["sim", "dataset", "--kind", "video", "--count", "2", "--out", str(tmp_path / "d")]) == 0
    _check_llava(tmp_path / "d" / "video_train.json", 8)
    assert main(["sim", "bag", "--out", str(tmp_path / "b"), "--storage", "sqlite3", "--cameras", "front",
                 "--fps", "4", "--size", "64x48", "--encoding", "jpeg", "--duration", "1"]) == 0
    assert truth_path(tmp_path / "b").exists() and (tmp_path / "b" / "metadata.yaml").exists()
