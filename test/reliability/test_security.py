"""Security properties that can be checked here: weights only from safetensors, no remote code, bounded inputs, and
an SROS2 policy that allows exactly what a running node uses. (SROS2 itself cannot run here: the PyPI Fast DDS is
built without its security plugins; docs/SECURITY.md has the steps for a real install.)"""
import re
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from vila_ros.tools.harness import running_node

REPO = Path(__file__).resolve().parents[2]
POLICY = REPO / "config" / "sros2" / "vila_perception.policy.xml"


def test_no_unpickling_and_no_remote_code_in_the_package():
    unsafe = re.compile(r"torch\.load\(|pickle\.loads?\(|trust_remote_code\s*=\s*True|from_pretrained\([^)]*https?:")
    hits = [f"{path.relative_to(REPO)}:{n}" for path in (REPO / "vila_ros").rglob("*.py")
            for n, line in enumerate(path.read_text().splitlines(), 1) if unsafe.search(line)]
    # The one exception: the TinyChat converter, through PyTorch's restricted unpickler (tensors only).
    converter = [h for h in hits if h.startswith("vila_ros/quant/tinychat.py:")]
    lines = (REPO / "vila_ros/quant/tinychat.py").read_text().splitlines()
    assert converter and all("weights_only=True" in lines[int(h.split(":")[1]) - 1] for h in converter), converter
    assert not set(hits) - set(converter), hits


def _policy_names():
    """node -> {publish, subscribe, reply} -> the fully qualified names the policy allows."""
    profiles = ET.parse(POLICY).getroot().findall("./enclaves/enclave/profiles/profile")
    allowed = {}
    for profile in profiles:
        node = profile.get("node")

        def expand(name):
            return f"/{node}/{name[1:]}" if name.startswith("~") else name

        modes = allowed.setdefault(node, {"publish": set(), "subscribe": set(), "reply": set()})
        for group in profile:
            if group.tag == "actions" and group.get("execute") == "ALLOW":  # an action server's five endpoints
                for action in (expand(child.text.strip()) for child in group):
                    modes["publish"] |= {f"{action}/_action/feedback", f"{action}/_action/status"}
                    modes["reply"] |= {f"{action}/_action/{s}" for s in ("send_goal", "cancel_goal", "get_result")}
                continue
            for mode in modes:
                if group.get(mode) == "ALLOW":
                    modes[mode] |= {expand(child.text.strip()) for child in group}
    return allowed


def _endpoints(node, name):
    return {"publish": {n for n, _ in node.get_publisher_names_and_types_by_node(name, "/")},
            "subscribe": {n for n, _ in node.get_subscriber_names_and_types_by_node(name, "/")},
            "reply": {n for n, _ in node.get_service_names_and_types_by_node(name, "/")}}


def test_the_sros2_policy_allows_every_endpoint_of_a_running_node(tiny_dir, tmp_path):
    allowed = _policy_names()
    assert set(allowed) == {"vila_perception", "vila_perception_ingest"}
    params = {"model_dir": str(tiny_dir), "camera_names": "[front,rear]",
              "camera_topics": "[/cameras/front/image_raw,/cameras/rear/image_raw/compressed]"}
    with running_node(tmp_path, params) as (process, listener, log):
        deadline = time.monotonic() + 90
        while True:  # the graph fills in as discovery completes
            found = {name: _endpoints(listener.node, name) for name in allowed}
            if ("/vila_perception/alerts" in found["vila_perception"]["publish"]
                    and "/cameras/rear/image_raw/compressed" in found["vila_perception_ingest"]["subscribe"]
                    and "/vila_perception/query_scene" in found["vila_perception"]["reply"]) \
                    or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert "/vila_perception/description" in found["vila_perception"]["publish"]
    assert "/cameras/front/image_raw" in found["vila_perception_ingest"]["subscribe"]
    for name, modes in found.items():
        for mode, names in modes.items():
            assert names <= allowed[name][mode], (name, mode, names - allowed[name][mode])
