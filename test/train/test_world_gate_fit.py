"""`vila-ros fit-world-gate` on a real (tiny) checkpoint: the gate written beside the weights, its threshold above
every validation scene it was set on, and the report of distances."""
import json

from vila_ros.model.world_gate import WORLD_GATE_FILE, WorldGate
from vila_ros.train.world_gate_fit import MARGIN, fit_world_gate


def test_the_fitted_gate_is_stored_with_the_model_and_passes_its_validation_windows(tiny_ckpt, tmp_path):
    out = tmp_path / WORLD_GATE_FILE
    report = fit_world_gate(tiny_ckpt, scenes=8, out=out)
    gate = WorldGate.load(out)
    assert gate.threshold == report["threshold"] > 0
    assert report["val_scenes"]["unfamiliar"] == 0 and report["train"]["unfamiliar"] == 0
    assert report["threshold"] >= MARGIN * report["val_scenes"]["min_median_p99_max"][-1] * 0.999
    assert report["out_of_world"]["frames"] > 0
    assert json.loads(out.with_suffix(".json").read_text()) == report
