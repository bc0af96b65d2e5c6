"""Where the package's own files are: the embedded default model and the shipped configuration."""
from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_MODEL_DIR = PACKAGE_DIR / "default_model"
LOCAL_LARGE_FRAMES_DDS_PROFILE = "fastdds_local_large_frames.xml"
# What the node reads from a model directory beside the weights (alert_thresholds_file, describe_regex_file and
# world_gate_file 'model'): it belongs to the model, so a quantized copy carries it.
ALERT_THRESHOLDS_FILE = "alert_thresholds.json"
DESCRIPTION_REGEX_FILE = "description_regex.txt"
WORLD_GATE_FILE = "world_gate.safetensors"
MODEL_DECISION_FILES = (ALERT_THRESHOLDS_FILE, DESCRIPTION_REGEX_FILE, WORLD_GATE_FILE)


def shipped_config(name: str) -> Path:
    """A file of the package's config/: beside the package in a source checkout, or where CMake installed it
    (<prefix>/share/vila_ros/config)."""
    import sys

    for folder in (PACKAGE_DIR.parent / "config", Path(sys.prefix) / "share" / "vila_ros" / "config"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"config/{name} is neither in the source checkout nor installed under {sys.prefix}")


def resolve_model_dir(model_dir: str | Path | None) -> Path:
    """`model_dir`, or the embedded default when it is empty; a clear error when it does not exist."""
    path = Path(model_dir).expanduser() if model_dir else DEFAULT_MODEL_DIR
    if model_dir and not path.is_dir():
        raise FileNotFoundError(f"model directory {path} does not exist")
    if not (path / "config.json").is_file():
        what = "the embedded default model" if not model_dir else "model directory"
        raise FileNotFoundError(f"{what} {path} has no config.json: expected a VILA1.5 checkpoint directory "
                                "(config.json, llm/, vision_tower/, mm_projector/)")
    return path
