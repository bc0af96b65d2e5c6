"""The engine over the session's tiny checkpoint (test/conftest.py), and camera-like frames."""
import pytest


@pytest.fixture(scope="session")
def tiny_engine(tiny_dir):
    from vila_ros.engine import create_engine

    return create_engine(tiny_dir)


@pytest.fixture(scope="session")
def frames():
    import numpy as np

    rng = np.random.default_rng(7)
    return [rng.integers(0, 256, (48 + 8 * i, 64, 3), dtype=np.uint8) for i in range(4)]
