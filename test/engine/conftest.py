"""A tiny VILA1.5 checkpoint written once per test session (real files, real loader)."""
import pytest


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    from vila_ros.model.presets import init_model

    return init_model("tiny", tmp_path_factory.mktemp("ckpt") / "tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_model(tiny_dir):
    from vila_ros.model.checkpoint import load_vila

    return load_vila(tiny_dir)


@pytest.fixture(scope="session")
def tiny_engine(tiny_dir):
    from vila_ros.engine import create_engine

    return create_engine(tiny_dir)


@pytest.fixture(scope="session")
def frames():
    import numpy as np

    rng = np.random.default_rng(7)
    return [rng.integers(0, 256, (48 + 8 * i, 64, 3), dtype=np.uint8) for i in range(4)]
