"""An int4 checkpoint of the session's tiny model (test/conftest.py) for the benchmarks that take ``--int4``."""
import pytest


@pytest.fixture(scope="session")
def int4_dir(tiny_dir, tmp_path_factory):
    from vila_ros.quant.pipeline import quantize_checkpoint

    out = tmp_path_factory.mktemp("bench") / "rtn"
    quantize_checkpoint(tiny_dir, out, method="rtn", group_size=64)
    return out
