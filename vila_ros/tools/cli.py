"""`vila-ros run | replay | query | replay-test | eval-stream | soak | demo`: the perception node and the programs
around it from the command line. Registering reads only argument definitions; rclpy, the node and the model load in
the handlers."""
from __future__ import annotations

import argparse
import json
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    from vila_ros.sim.cli import size_argument
    from vila_ros.tools.demo import add_arguments as add_demo_arguments
    from vila_ros.tools.replay import add_replay_arguments
    from vila_ros.tools.soak import add_arguments as add_soak_arguments

    node = subparsers.add_parser("run", help="run the perception node without ros2 launch",
                                 description="Run the perception node (what perception.launch.py starts). "
                                             "Arguments after --ros-args go to ROS, e.g. --ros-args -p model_dir:=DIR.")
    node.add_argument("--params", help="parameter file, e.g. config/perception.yaml")
    node.add_argument("--use-sim-time", action="store_true", help="follow /clock (replays with --clock)")
    node.add_argument("ros_arguments", nargs=argparse.REMAINDER)
    node.set_defaults(func=_run_node)

    replay = subparsers.add_parser("replay", help="replay a rosbag2 recording (mcap or sqlite3) into ROS",
                                   description="Publish a bag's messages as recorded, paced by their times.")
    add_replay_arguments(replay)
    replay.set_defaults(func=_run_replay)

    query = subparsers.add_parser("query", help="ask the running perception node a question (QueryScene), "
                                                "or list its recent events (QueryEvents with --events)")
    query.add_argument("question", nargs="?", default="", help="the question (QueryScene)")
    query.add_argument("--node", default="/vila_perception", help="the perception node's full name")
    query.add_argument("--camera", default="")
    query.add_argument("--seconds", type=float, default=0.0, help="window in seconds (0 = node default)")
    query.add_argument("--frames", type=int, default=0, help="frames per camera (0 = node default)")
    query.add_argument("--max-new-tokens", type=int, default=0)
    query.add_argument("--events", action="store_true", help="QueryEvents instead: what happened in --seconds")
    query.add_argument("--filter", default="", help="text filter for --events")
    query.add_argument("--timeout", type=float, default=60.0)
    query.set_defaults(func=_run_query)

    replay_test = subparsers.add_parser(
        "replay-test", help="run the node on bags with ground truth and score its alerts and descriptions",
        description="Starts the perception node, replays the bags into it, scores recall of planted events, false "
                    "alerts, frames-to-alert and latency against <bag>.truth.json (or --truth).")
    replay_test.add_argument("bags", nargs="+", help="rosbag2 directories (replayed together)")
    replay_test.add_argument("--truth", help="ground-truth file (default: <bag>.truth.json)")
    replay_test.add_argument("--model", default="", help="checkpoint directory (default: the embedded model)")
    replay_test.add_argument("--rate", type=float, default=1.0)
    replay_test.add_argument("--out", default="out/replay_test", help="directory for the report and node log")
    replay_test.add_argument("--json", action="store_true", help="print the report as JSON")
    replay_test.add_argument("--clock", action="store_true", help="replay /clock and run the node on sim time")
    replay_test.set_defaults(func=_run_replay_test)

    stream = subparsers.add_parser(
        "eval-stream", help="score the node on the held-out stream split, in-process, faster than real time",
        description="Runs the node's frame buffer, worker schedule, prompts and event tracker in this process on "
                    "simulated camera streams (scenes of 20-60 s with cuts; split stream_test unless --split) or "
                    "on bags with ground truth, and scores what it would publish: event recall, BEGIN precision, "
                    "false alerts per camera-hour, frames-to-alert, END delay, description correctness and "
                    "malformed descriptions. Writes stream_eval.json, .md and .png to --out.")
    stream.add_argument("bags", nargs="*", help="rosbag2 directories with .truth.json (default: generated streams)")
    stream.add_argument("--model", default="", help="checkpoint directory (default: the embedded model)")
    stream.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "int4"])
    stream.add_argument("--split", default="stream_test", choices=["stream_val", "stream_test"])
    stream.add_argument("--minutes", type=float, default=32.0, help="camera-minutes of generated streams")
    stream.add_argument("--events-per-category", type=int, default=0, metavar="N",
                        help="instead of --minutes: streams with N scenes of each category of each family (and "
                             "event-free scenes), so that every category's threshold is chosen on as many events")
    stream.add_argument("--min-scene", type=float, default=20.0, help="shortest scene (s)")
    stream.add_argument("--max-scene", type=float, default=60.0, help="longest scene (s)")
    stream.add_argument("--frames", type=int, default=0, help="window in frames (node num_frames; 1 = single frame)")
    stream.add_argument("--frame-size", type=size_argument, metavar="WIDTHxHEIGHT",
                        help="the generated streams' camera frames (default a camera's 320x240, squashed to the "
                             "model's square by its resize; N = a square render, e.g. the model's own size)")
    stream.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a node parameter (JSON value), e.g. --set alert_confirm=2")
    stream.add_argument("--probabilities", action="store_true",
                        help="also the model's probability of each category at every alert check: calibration "
                             "(reliability.png, ECE, calibration.md) and per-category thresholds "
                             "(alert_thresholds.json)")
    stream.add_argument("--thresholds",
                        help="implies --probabilities: alert_thresholds.json for its per-category report instead of "
                             "choosing them (in that mode alerts follow the generated answers; to run the node at "
                             "other thresholds: --set alert_thresholds_file=FILE)")
    stream.add_argument("--cross-validate", type=int, default=0, metavar="N",
                        help="implies --probabilities: also N random halvings of the split's cameras, thresholds "
                             "chosen on each half and scored on the other, for each rule of choosing them (objective, "
                             "ties; calibration.md)")
    stream.add_argument("--agree-with", metavar="RUN",
                        help="implies --probabilities: another run's stream_eval.json (or its --out directory) on "
                             "the same split and settings, e.g. the float model of this int4 copy; per category, "
                             "the checks where one run's probability is at or above the threshold and the other's "
                             "is not (agreement.json)")
    stream.add_argument("--replay", metavar="RUN",
                        help="instead of running the model: the alert checks an earlier --probabilities run recorded "
                             "(its stream_eval.json or --out directory) decided again through the node's tracker at "
                             "the thresholds and tracker settings --set gives (alert_thresholds_file, alert_clear, "
                             "alert_cooldown_s, ...) or a longer alert_period_s; with --cross-validate, the rules "
                             "of choosing thresholds cross-validated on those checks; --split and --minutes must be "
                             "the run's (replay.json)")
    stream.add_argument("--photo", action="append", default=[], metavar="IMAGE",
                        help="instead of streams: hold this image file in front of a camera for 20 s and report "
                             "alerts and descriptions (real photographs: the model should alert nothing)")
    stream.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    stream.add_argument("--out", default="out/stream_eval", help="directory for stream_eval.json / .md / .png")
    stream.add_argument("--json", action="store_true", help="print the figures as JSON")
    stream.set_defaults(func=_run_eval_stream)

    soak = subparsers.add_parser("soak", help="many frames at full speed through a node process: memory, alerts, "
                                              "crashes (JSON report)")
    add_soak_arguments(soak)

    demo = subparsers.add_parser("demo", help="the product end to end on a simulated drive (what `make demo` runs)")
    add_demo_arguments(demo)
    demo.set_defaults(func=_run_demo)


def _run_replay_test(args: argparse.Namespace) -> int:
    from pathlib import Path

    from vila_ros.tools.replay_test import run_replay_test

    if args.truth and len(args.bags) != 1:
        print("replay-test: --truth names the ground truth of a single bag", file=sys.stderr)
        return 2
    try:
        report = run_replay_test([Path(b) for b in args.bags], Path(args.out), model_dir=args.model, rate=args.rate,
                                 truth_files=[Path(args.truth)] if args.truth else None, clock=args.clock)
    except (FileNotFoundError, RuntimeError, ValueError) as error:
        print(f"replay-test: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"recall {report['recall']}, false alerts {report['false_alerts']}, report in {args.out}/report.md")
    return 0


def _run_eval_stream(args: argparse.Namespace) -> int:
    from pathlib import Path

    from vila_ros.tools.stream_eval import RENDER_SIZE, evaluate
    from vila_ros.tools.stream_report import summary_rows

    overrides = {}
    for item in args.set:
        name, _, text = item.partition("=")
        try:
            overrides[name.strip()] = json.loads(text)
        except json.JSONDecodeError:
            overrides[name.strip()] = text
    if args.frames:
        overrides["num_frames"] = args.frames
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    if args.replay:
        return _replay_stream(args, overrides)
    if args.photo:
        from vila_ros.resources import resolve_model_dir
        from vila_ros.tools.stream_eval import engine_for, photo_runs

        model_dir = resolve_model_dir(args.model)
        try:
            runs = photo_runs(engine_for(args.model, args.precision, overrides), [Path(p) for p in args.photo],
                              overrides={"model_dir": str(model_dir), **overrides})
        except (FileNotFoundError, ValueError) as error:
            print(f"eval-stream: {error}", file=sys.stderr)
            return 1
        print(json.dumps(runs, indent=1))
        return 0
    try:
        reference = None
        if args.agree_with:
            from vila_ros.tools.stream_agreement import decision_agreement, read_checks

            reference = read_checks(Path(args.agree_with))
        report = evaluate(args.model, args.precision, args.split, args.minutes, overrides,
                          [Path(b) for b in args.bags] or None, Path(args.out), args.min_scene, args.max_scene,
                          progress=lambda line: print(line, file=sys.stderr),
                          probabilities=(args.probabilities or bool(args.thresholds) or args.cross_validate > 0
                                         or reference is not None),
                          thresholds=json.loads(Path(args.thresholds).read_text()) if args.thresholds else None,
                          events_per_category=args.events_per_category, halvings=args.cross_validate,
                          frame_size=args.frame_size or RENDER_SIZE)
        if reference is not None:
            agreement = decision_agreement(reference, report["records"]["checks"],
                                           report["probabilities"]["thresholds"])
            (Path(args.out) / "agreement.json").write_text(json.dumps(agreement, indent=1))
    except (FileNotFoundError, ValueError) as error:
        print(f"eval-stream: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({key: value for key, value in report.items() if key != "records"}, indent=1))
    else:
        for name, value in summary_rows(report):
            print(f"{name}: {value}")
        if "probabilities" in report and report["probabilities"]["calibration"]["ece"] is not None:
            print(f"expected calibration error: {report['probabilities']['calibration']['ece']:.3f}")
        if reference is not None:
            print(f"decisions unlike {args.agree_with}: {agreement['flipped']} of {agreement['decisions']} "
                  f"(mean |log-odds difference| {agreement['mean_abs_log_odds']:.3f})")
        print(f"report in {args.out}/stream_eval.md")
    return 0


def _replay_stream(args: argparse.Namespace, overrides: dict) -> int:
    from pathlib import Path

    from vila_ros.tools.stream_replay import redecide
    from vila_ros.tools.stream_report import alert_rows, missed_line

    try:
        report = redecide(Path(args.replay), args.split, args.minutes, {"model_dir": args.model, **overrides},
                          args.min_scene, args.max_scene, events_per_category=args.events_per_category,
                          halvings=args.cross_validate)
    except (FileNotFoundError, ValueError) as error:
        print(f"eval-stream: {error}", file=sys.stderr)
        return 1
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "replay.json").write_text(json.dumps(report, indent=1))
    if args.json:
        print(json.dumps({key: value for key, value in report.items() if key != "records"}, indent=1))
    else:
        for name, value in alert_rows(report):
            print(f"{name}: {value}")
        for event in report["missed"]:
            print(missed_line(event))
        folds = report.get("cross_validation", {})
        for rule in folds.get("rules", {}):
            recall, precision = (("-" if x is None else f"{x:.3f}") for x in (folds[rule]["recall"],
                                                                            folds[rule]["precision"]))
            print(f"cross-validated ({folds['halvings']} halvings), thresholds by rule {rule!r}: recall {recall}, "
                  f"precision {precision}")
        print(f"report in {args.out}/replay.json")
    return 0


def _run_demo(args: argparse.Namespace) -> int:
    from vila_ros.tools.demo import run

    return run(args)


def _run_node(args: argparse.Namespace) -> int:
    from vila_ros.ros.perception_node import main

    ros_arguments = list(args.ros_arguments)
    extra = []
    if args.params:
        extra += ["--params-file", args.params]
    if args.use_sim_time:
        extra += ["-p", "use_sim_time:=true"]
    if extra:
        if "--ros-args" in ros_arguments:
            ros_arguments += extra
        else:
            ros_arguments = ["--ros-args", *extra, *ros_arguments]
    return main(["perception_node", *ros_arguments])


def _run_replay(args: argparse.Namespace) -> int:
    from vila_ros.tools.replay import run

    return run(args)


def _run_query(args: argparse.Namespace) -> int:
    import rclpy

    from vila_ros.ros.conversion import stamp_to_ns
    from vila_ros.srv import QueryEvents, QueryScene
    from vila_ros.tools.client import ServiceTimeoutError, ServiceUnavailableError, call_service

    rclpy.init()
    node = rclpy.create_node("vila_ros_query")
    try:
        if args.events:
            request = QueryEvents.Request(window_seconds=args.seconds, text_filter=args.filter)
            response = call_service(node, QueryEvents, f"{args.node}/query_events", request, args.timeout)
            result = {"success": response.success, "error_message": response.error_message,
                      "descriptions": [{"stamp_ns": stamp_to_ns(d.header.stamp), "camera": ",".join(d.cameras),
                                        "text": d.text} for d in response.descriptions],
                      "alerts": [{"stamp_ns": stamp_to_ns(a.header.stamp), "alert_id": a.alert_id,
                                  "category": a.category, "state": a.state, "text": a.text}
                                 for a in response.alerts]}
        else:
            if not args.question:
                print("query: a question is needed (or --events)", file=sys.stderr)
                return 2
            request = QueryScene.Request(question=args.question, camera=args.camera, window_seconds=args.seconds,
                                         window_frames=args.frames, max_new_tokens=args.max_new_tokens)
            response = call_service(node, QueryScene, f"{args.node}/query_scene", request, args.timeout)
            result = {"success": response.success, "answer": response.answer,
                      "error_message": response.error_message, "latency_ms": round(response.latency_ms, 1),
                      "frame_stamps_ns": [stamp_to_ns(s) for s in response.frame_stamps],
                      "frame_cameras": list(response.frame_cameras)}
    except (ServiceUnavailableError, ServiceTimeoutError) as error:
        print(f"query: {error}", file=sys.stderr)
        return 1
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0 if result["success"] else 1
