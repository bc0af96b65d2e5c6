"""Test-wide environment: DDS on loopback, one ROS domain per test process, no model hub."""
import os
import pathlib

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

# Before anything can call rclpy.init(): discovery never leaves this machine, and concurrent test runs
# (several checkouts, CI jobs) do not see each other's nodes.
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ["ROS_DOMAIN_ID"] = os.environ.get("VILA_ROS_TEST_DOMAIN_ID", str(1 + os.getpid() % 100))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# Subprocesses started by tests import the source tree, like the test process itself.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))


# ----------------------------------------------------------------------------------------------- shared fixtures
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A tiny VILA1.5 checkpoint written once per test session (real files, read by the real loader)."""
    from vila_ros.model.presets import init_model

    return init_model("tiny", tmp_path_factory.mktemp("ckpt") / "tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_model(tiny_dir):
    from vila_ros.model.checkpoint import load_vila

    return load_vila(tiny_dir)


def _require_our_kernels(monkeypatch):
    from vila_ros import kernels

    missing = kernels._missing_requirement()
    if missing:
        pytest.skip(f"our CPU kernels cannot run here: {missing}")
    monkeypatch.setenv("VILA_ROS_CPU_KERNELS", "require")  # a failed build fails the test


@pytest.fixture(params=["tinygemm", "vila_ros"])
def kernel(request, monkeypatch):
    """Which CPU kernels the code under test picks (read when a module is prepared / a decoder is built): aten's
    ("tinygemm"), or ours, which must build and load here unless this CPU lacks AVX-512 BF16."""
    if request.param == "vila_ros":
        _require_our_kernels(monkeypatch)
    else:
        monkeypatch.setenv("VILA_ROS_CPU_KERNELS", "off")
    return request.param


@pytest.fixture
def our_kernels(monkeypatch):
    """Our compiled CPU kernels, required (skipped only where this CPU cannot run them)."""
    from vila_ros import kernels

    _require_our_kernels(monkeypatch)
    return kernels.cpu_kernels()


@pytest.fixture
def refusal_of(tmp_path):
    """The UnsupportedCheckpointError text of loading a copy of checkpoint ``source`` whose config.json
    ``change(config)`` edited."""
    import json
    import shutil

    from vila_ros.model.checkpoint import UnsupportedCheckpointError, load_vila

    def load_changed(source, change) -> str:
        root = tmp_path / "ckpt"
        shutil.copytree(source, root)
        config = json.loads((root / "config.json").read_text())
        change(config)
        (root / "config.json").write_text(json.dumps(config))
        with pytest.raises(UnsupportedCheckpointError) as caught:
            load_vila(root)
        return str(caught.value)

    return load_changed
