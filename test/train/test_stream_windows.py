"""Stream windows in the training mix: windows of every length and phase of a scene, whose answers are the truth
of exactly those frames, and a short training run on them (smoke)."""
from vila_ros import tasks
from vila_ros.model.checkpoint import load_vila
from vila_ros.train import data as D
from vila_ros.train.trainer import train


def _dataset(model, mix=None, **options) -> D.SimDataset:
    """8-frame windows of 56 px (stream windows only unless `mix`), with the SimDataset `options` under test."""
    return D.SimDataset(model.tokenizer, model.image_processor, model.conv_template, 56, num_frames=8,
                        mix=mix or {"stream_window": 1.0}, **options)


def test_stream_windows_cover_every_length_and_phase_with_their_own_truth(tiny_ckpt):
    model = load_vila(tiny_ckpt)
    ds = _dataset(model)
    lengths, answers = set(), []
    for i in range(80):
        conv, frames, kind = ds.conversation(i)
        assert kind == "stream_window" and conv[0]["value"].count("<image>") == len(frames)
        lengths.add(len(frames))
        answers.append((len(frames), conv[0]["value"].endswith(tasks.DESCRIBE_PROMPT), conv[1]["value"]))
    assert lengths == set(range(1, 9))
    captions = [a for n, describe, a in answers if describe]
    assert any(a.endswith(tasks.NO_EVENT_SENTENCE) for a in captions)  # event-free windows, before and after
    assert any(not a.endswith(tasks.NO_EVENT_SENTENCE) and n > 1 for n, d, a in answers if d)  # onsets inside
    # A single frame never names a temporal event.
    for n, describe, answer in answers:
        if n == 1 and describe:
            assert tasks.caption_attributes(answer).get("event") is None
        if n == 1 and not describe:
            assert all(not tasks.CATEGORIES[c].temporal for c in tasks.parse_categories(answer))
    assert ds.conversation(7)[0] == ds.conversation(7)[0]  # deterministic in the index


def test_short_training_run_on_the_stream_mix(tiny_ckpt, tmp_path):
    recipe = {"name": "stream-smoke", "seed": 0, "stages": [{
        "name": "sft", "train": {"vision_tower": False, "mm_projector": True, "llm": True}, "lr": 1e-3,
        "batch_size": 2, "max_steps": 2, "log_every": 1,
        "data": {"type": "sim", "num_frames": 4, "mix": {"stream_window": 0.5, "video_alert": 0.5}}}]}
    final = train(recipe, tmp_path / "run", init=tiny_ckpt)
    assert (final / "config.json").is_file() and load_vila(final) is not None


def test_out_of_world_frames_are_answered_unfamiliar_without_alert(tiny_ckpt):
    import numpy as np

    from vila_ros.sim.unfamiliar import KINDS, unfamiliar_frame
    from vila_ros.tools.stream_scoring import well_formed

    model = load_vila(tiny_ckpt)
    ds = _dataset(model, mix={"unfamiliar": 1.0})
    answers = set()
    for i in range(12):
        conv, frames, kind = ds.conversation(i)
        assert kind == "unfamiliar" and 1 <= len(frames) <= 8 and frames[0].shape == (56, 56, 3)
        answers.add((conv[0]["value"].split("\n")[-1], conv[1]["value"]))
    assert answers == {(tasks.DESCRIBE_PROMPT, tasks.UNFAMILIAR_SCENE), (tasks.ALERT_PROMPT, tasks.NO_ALERT_ANSWER)}
    rng = np.random.default_rng(0)
    for kind in KINDS:  # none of them is the dark of a covered lens
        assert unfamiliar_frame(rng, 64, kind).max() >= 120
    assert well_formed(tasks.UNFAMILIAR_SCENE) is not None


def test_onset_windows_end_near_the_onset_and_hold_both_answers(tiny_ckpt):
    import numpy as np

    from vila_ros.sim import make_scenario

    model = load_vila(tiny_ckpt)
    ds = _dataset(model, onset_windows=1.0)
    uniform = _dataset(model)
    scenarios = [make_scenario(seed, category="pedestrian_crossing", duration=40.0) for seed in range(30)]
    named, far = [], 0
    for k, scenario in enumerate(scenarios):
        stamps = ds.window_stamps(scenario, np.random.default_rng(k))
        assert abs(stamps[-1] - scenario.event.start) <= D.ONSET_SPAN + 1e-9
        named.append(bool(scenario.truth(stamps).events))
        far += abs(uniform.window_stamps(scenario, np.random.default_rng(k))[-1] - scenario.event.start) > D.ONSET_SPAN
    assert 0 < sum(named) < len(named)  # windows just before the onset ("no") and just after it ("yes")
    assert far > len(scenarios) // 2  # uniform ends mostly fall elsewhere
    no_event = make_scenario(0, category=None, duration=40.0)
    assert len(ds.window_stamps(no_event, np.random.default_rng(0))) >= 1


def test_cut_windows_hold_another_scene_then_the_first_frames_of_this_one(tiny_ckpt):
    import numpy as np

    from vila_ros.sim import make_scenario, split_of

    model = load_vila(tiny_ckpt)
    ds = _dataset(model, cut_windows=1.0)
    rng = np.random.default_rng(3)
    for seed in (11, 9_999_990):  # near the end of the train range the scene before comes from below
        scenario = make_scenario(seed, category="camera_blocked", duration=30.0)
        for n in (2, 5, 8):
            before, stamps = ds._across_cut(scenario, n, seed, rng, (56, 56))
            assert before and stamps and len(before) + len(stamps) == n
            assert stamps == [k / ds.clip_fps for k in range(len(stamps))]  # this scene from its first frame
            assert not scenario.truth(stamps).events  # a cut is no event: the answer is of the frames after it
            ours = [scenario.render(t, 56, 56) for t in stamps[:1]]
            assert not any(np.array_equal(frame, ours[0]) for frame in before)
    assert split_of(9_999_990 - D.CUT_SEED_OFFSET) == "train"
    lengths = []
    for i in range(40):
        conv, frames, kind = ds.conversation(i)
        assert kind == "stream_window" and conv[0]["value"].count("<image>") == len(frames)
        lengths.append(len(frames))
    assert 1 in lengths and max(lengths) > 1  # one frame cannot cross a cut and is left as it is


def test_full_windows_are_the_node_s_steady_state_window(tiny_ckpt):
    import numpy as np

    from vila_ros.sim import make_scenario

    model = load_vila(tiny_ckpt)
    full = _dataset(model, full_windows=0.5)
    uniform = _dataset(model)
    scenario = make_scenario(5, category="falling_object", duration=40.0)
    rng_full, rng_uniform = np.random.default_rng(1), np.random.default_rng(1)
    full_lengths = [len(full.window_stamps(scenario, rng_full)) for _ in range(400)]
    uniform_lengths = [len(uniform.window_stamps(scenario, rng_uniform)) for _ in range(400)]
    assert set(full_lengths) == set(range(1, 9))  # the short windows of a filling buffer stay in the mix
    assert full_lengths.count(8) > 150 > 2 * uniform_lengths.count(8)  # ~0.5 + 0.5/8 vs 1/8


def test_focus_events_give_their_share_of_stream_scenes_the_event_asked_for(tiny_ckpt):
    import numpy as np
    import pytest

    model = load_vila(tiny_ckpt)
    focus = {"warehouse/falling_object": 0.4, "wrong_way_vehicle": 0.2}
    ds = _dataset(model, focus_events=focus)
    scenes = [ds.stream_scenario(1000 + i, np.random.default_rng(i)) for i in range(300)]
    events = [(s.family, s.event.category if s.event else None) for s in scenes]
    falls = events.count(("warehouse", "falling_object")) / len(events)
    wrong_way = events.count(("road", "wrong_way_vehicle")) / len(events)
    assert 0.33 < falls < 0.5 and 0.14 < wrong_way < 0.28  # seed-chosen scenes add ~3% of each
    assert len(set(events)) > 8  # the rest as the seed chooses
    plain = _dataset(model)
    natural = [plain.stream_scenario(1000 + i, np.random.default_rng(i)) for i in range(300)]
    assert sum(s.event is not None and s.event.category == "wrong_way_vehicle" for s in natural) < 0.1 * 300
    for bad in ({"falling": 0.1}, {"warehouse/wrong_way_vehicle": 0.1}, {"red_light": 0.7, "animal_crossing": 0.5}):
        with pytest.raises(ValueError):
            _dataset(model, focus_events=bad)


def test_render_size_gives_the_node_s_camera_frames_squashed_by_the_model_s_own_resize(tiny_ckpt):
    import numpy as np

    model = load_vila(tiny_ckpt)
    camera = _dataset(model, render_size=[160, 120], cut_windows=0.5)  # a recipe's YAML gives a list
    square = _dataset(model, cut_windows=0.5)
    for i in range(12):
        conv, frames, _ = camera.conversation(i)
        assert all(frame.shape == (120, 160, 3) for frame in frames)  # the cut's frames before too
        assert camera[i]["pixels"].shape[-2:] == (56, 56)  # the model's input, as the node feeds it
        assert conv == square.conversation(i)[0]  # the same windows and answers, only rendered otherwise
    ours, theirs = camera[0]["pixels"], square[0]["pixels"]
    assert ours.shape == theirs.shape and not np.allclose(ours.numpy(), theirs.numpy())


def test_several_render_sizes_are_drawn_per_window_and_bad_sizes_are_refused(tiny_ckpt):
    import numpy as np
    import pytest

    model = load_vila(tiny_ckpt)
    mixed = _dataset(model, render_size=[[160, 120], [96, 72], [56, 56]], cut_windows=0.5)
    shapes = []
    for i in range(30):
        _, frames, _ = mixed.conversation(i)
        assert len({frame.shape for frame in frames}) == 1  # one camera per window, the cut's frames too
        shapes.append(frames[0].shape)
        assert mixed[i]["pixels"].shape[-2:] == (56, 56)
    assert set(shapes) == {(120, 160, 3), (72, 96, 3), (56, 56, 3)}
    assert all(np.array_equal(a, b) for a, b in zip(mixed.conversation(5)[1], mixed.conversation(5)[1]))
    for bad in ([160], [[160, 120], [96]], [160, -120], [[160, 120.5]], "320x240"):
        with pytest.raises(ValueError, match="render_size"):
            _dataset(model, render_size=bad)
