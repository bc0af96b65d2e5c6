"""The message samples shared by the DDS tests and their peer process (`peer.py`, run by path beside them)."""
import importlib.util
import pathlib

import pytest

HERE = pathlib.Path(__file__).parent


@pytest.fixture(scope="session")
def samples():
    """samples.py, loaded from its file: the peer process imports the same file as a script's neighbour."""
    spec = importlib.util.spec_from_file_location("vila_ros_dds_test_samples", HERE / "samples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
