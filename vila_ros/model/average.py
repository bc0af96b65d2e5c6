"""A checkpoint whose weights are the uniform average of several ("model soup", Wortsman et al., 2022).

Checkpoints fine-tuned from one starting point with other seeds, data mixes or learning rates lie in one basin of the
loss, and their average often generalises better than any of them alone, at no cost at run time. Checkpoints that
do not share an architecture and input size are refused. The caption grammar (``description_regex.txt``) is carried
when every checkpoint stores the same one; alert thresholds never are: the average's probabilities are its own, so
choose them again (``vila-ros eval-stream --split stream_val --probabilities``).
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Sequence

import torch

from vila_ros.model.checkpoint import load_vila, save_vila
from vila_ros.resources import DESCRIPTION_REGEX_FILE


def average_checkpoints(model_dirs: Sequence[str | Path], out_dir: str | Path) -> Path:
    """Write the uniform average of the checkpoints at ``model_dirs`` to ``out_dir`` (summed in fp32, stored in the
    first checkpoint's dtype); one checkpoint is held in memory beside the running sum."""
    dirs = [Path(d) for d in model_dirs]
    if len(dirs) < 2:
        raise ValueError("averaging needs at least two checkpoints")
    if Path(out_dir).resolve() in {d.resolve() for d in dirs}:
        raise ValueError(f"{out_dir} is one of the checkpoints to average: write the average elsewhere")
    base = load_vila(dirs[0])
    base_state = base.state_dict()
    total = {key: value.float().clone() for key, value in base_state.items()}
    for path in dirs[1:]:
        other = load_vila(path)
        if other.config.image_size != base.config.image_size:
            raise ValueError(f"{path} takes {other.config.image_size}-px frames, {dirs[0]} {base.config.image_size}")
        state = other.state_dict()
        if state.keys() != total.keys():
            raise ValueError(f"{path} does not have the weights of {dirs[0]}: "
                             f"{sorted(state.keys() ^ total.keys())[:3]} differ")
        for key, value in state.items():
            if value.shape != total[key].shape:
                raise ValueError(f"{path}: {key} is {tuple(value.shape)}, {tuple(total[key].shape)} in {dirs[0]}")
            total[key] += value.float()
        del other, state
    with torch.no_grad():
        base.load_state_dict({key: (value / len(dirs)).to(base_state[key].dtype) for key, value in total.items()})
    out = save_vila(base, out_dir)
    grammars = {(d / DESCRIPTION_REGEX_FILE).read_text() if (d / DESCRIPTION_REGEX_FILE).is_file() else None
                for d in dirs}
    if len(grammars) == 1 and None not in grammars:
        shutil.copyfile(dirs[0] / DESCRIPTION_REGEX_FILE, out / DESCRIPTION_REGEX_FILE)
    return out
