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
