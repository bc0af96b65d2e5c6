"""The in-process eval's engine takes the node's `image_resize` as the node's configure does, and refuses the
configure-time parameters its own options pick instead of ignoring them."""
import numpy as np
import pytest

from vila_ros.tools.stream_eval import engine_for


def test_the_eval_engine_runs_the_resize_it_is_given(tiny_dir):
    frame = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    plain = engine_for(str(tiny_dir), "fp32", {"alert_confirm": 2})
    nearest = engine_for(str(tiny_dir), "fp32", {"image_resize": "nearest"})
    assert plain.model.image_processor.resize == "pil" and nearest.model.image_processor.resize == "nearest"
    assert not np.array_equal(plain.model.image_processor.prepare(frame), nearest.model.image_processor.prepare(frame))


@pytest.mark.parametrize("name, value", [("precision", "int4"), ("engine", "openai"), ("device", "cuda"),
                                         ("model_dir", "/elsewhere")])
def test_configure_time_parameters_the_eval_cannot_honour_are_refused(tiny_dir, name, value):
    with pytest.raises(ValueError, match=name):
        engine_for(str(tiny_dir), "fp32", {name: value})
