"""Shared fixtures: a tiny checkpoint (tokenizer trained on the simulator's text) and a small LLaVA dataset with
real JPEGs written by the simulator's writer."""
import pytest


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    from vila_ros.model.presets import init_model
    from vila_ros.train.corpus import sim_corpus

    return init_model("tiny", tmp_path_factory.mktemp("tiny") / "ckpt", seed=0, tokenizer_corpus=sim_corpus(200))


@pytest.fixture(scope="session")
def llava_json(tmp_path_factory):
    from vila_ros.sim.writers import write_llava_dataset

    return write_llava_dataset(tmp_path_factory.mktemp("llava"), kind="mix", count=12, size=64, num_frames=4)
