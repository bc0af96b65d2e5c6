"""Checkpoint I/O in the VILA1.5 / NVILA-Lite three-part layout, safetensors only.

    <ckpt>/config.json                  VilaConfig (llava_llama root config)
    <ckpt>/llm/                         LlamaForCausalLM (VILA1.5) or Qwen2ForCausalLM (NVILA-Lite): config.json,
                                        model-0000k-of-0000n.safetensors + index, tokenizer
    <ckpt>/vision_tower/                SiglipVisionModel: config.json, model.safetensors, preprocessor_config.json
    <ckpt>/mm_projector/                config.json (v2l_projector), model.safetensors (layers.1/2/4 ...)

Loading builds the modules without running weight initialisation (for the 3B model that is most of the load time)
directly in the requested dtype and device, then copies tensor by tensor out of memory-mapped safetensors files:
the model is never held twice. Every tensor's shape is checked against the config before it is read, and every
failure raises a CheckpointError subclass naming the file at fault. Pickle files (pytorch_model.bin, *.pt) are
never opened: unpickling runs arbitrary code.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from vila_ros.model.config import PART_NAMES, VilaConfig, dtype_name, unsupported_features
from vila_ros.model.preprocess import ImageProcessor
from vila_ros.model.vila import VilaModel
from vila_ros.model.vision import VILA_STATE_PREFIX

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
PICKLE_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "pytorch_model.bin.index.json")
DEFAULT_SHARD_BYTES = 2 * 1024**3
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")


class CheckpointError(Exception):
    """Base of every checkpoint problem; the message names the file at fault."""

    def __init__(self, message: str, path: str | Path | None = None):
        super().__init__(message)
        self.path = None if path is None else Path(path)


class MissingPartError(CheckpointError, FileNotFoundError):
    """A directory or file of the layout is absent (config.json, llm/, a shard named by the index, ...)."""


class ShapeMismatchError(CheckpointError):
    """A stored tensor's shape disagrees with the shape the config implies."""


class WeightKeysError(CheckpointError):
    """Tensors missing from, or unknown to, the part's weight files."""


class PickleRefusedError(CheckpointError):
    """Only pickle weights (pytorch_model.bin, *.pt): refused, since unpickling executes code."""


class CorruptCheckpointError(CheckpointError):
    """A file exists but cannot be parsed (bad JSON, truncated safetensors)."""


class UnsupportedCheckpointError(CheckpointError):
    """A well-formed checkpoint of a model variant this package does not implement (the message names it)."""


# -- dtype helpers --------------------------------------------------------------------------------------------------
_DTYPES = {
    "fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
}


def parse_dtype(value: str | torch.dtype | None, default: torch.dtype = torch.float32) -> torch.dtype:
    if value is None:
        return default
    if isinstance(value, torch.dtype):
        return value
    key = str(value).removeprefix("torch.").lower()
    if key not in _DTYPES:
        raise ValueError(f"unknown dtype {value!r}")
    return _DTYPES[key]


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build_uninitialized(
    config: VilaConfig, dtype: torch.dtype, device: str | torch.device = "cpu", **kwargs: Any
) -> VilaModel:
    """Modules in ``dtype`` on ``device`` with uninitialised (torch.empty) weights: the caller fills them."""
    from transformers.initialization import no_init_weights

    with torch.device(device), _default_dtype(dtype), no_init_weights():
        return VilaModel(config, **kwargs)


# -- reading ----------------------------------------------------------------------------------------------------------
def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise MissingPartError(f"missing {path}", path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CorruptCheckpointError(f"cannot parse {path}: {error}", path) from error


def read_config(path: str | Path) -> VilaConfig:
    """The root config.json of a checkpoint, with each part's own config.json taking precedence (as in VILA,
    whose parts load with from_pretrained on their directory)."""
    root = Path(path)
    if not root.is_dir():
        raise MissingPartError(f"checkpoint directory {root} does not exist", root)
    data = _read_json(root / "config.json")
    _refuse_unsupported(data, root / "config.json")
    try:
        config = VilaConfig.from_dict(data)
    except (KeyError, ValueError, TypeError) as error:
        raise CorruptCheckpointError(f"{root / 'config.json'}: {error}", root / "config.json") from error
    for part in PART_NAMES:
        part_dir = root / config.part_dir_name(part)
        if not part_dir.is_dir():
            raise MissingPartError(
                f"missing part directory {part_dir} (named by {part}_cfg in {root / 'config.json'})", part_dir
            )
        if part != "mm_projector" and (part_dir / "config.json").is_file():
            part_cfg = _read_json(part_dir / "config.json")
            part_cfg["_name_or_path"] = getattr(config, f"{part}_cfg").get("_name_or_path", f"./{part}")
            setattr(config, f"{part}_cfg", part_cfg)
            _refuse_unsupported({f"{part}_cfg": part_cfg}, part_dir / "config.json")
    if "conv_template" not in data and config.llm_type == "qwen2" and data.get("chat_template") is None:
        from vila_ros.model.chat_template import ChatTemplateError, template_of_llm_dir

        try:
            config.conv_template = template_of_llm_dir(root / config.part_dir_name("llm"))
        except ChatTemplateError as error:
            kind = CorruptCheckpointError if error.broken else UnsupportedCheckpointError
            raise kind(str(error), error.path) from error
    return config


def _refuse_unsupported(data: dict[str, Any], source: Path) -> None:
    unsupported = unsupported_features(data)
    if unsupported:
        raise UnsupportedCheckpointError(f"{source}: " + "; ".join(unsupported), source)


def weight_files(part_dir: Path) -> list[Path]:
    """The safetensors files of one part: those named by the index, else model.safetensors, else any *.safetensors."""
    index = part_dir / INDEX_NAME
    if index.is_file():
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CorruptCheckpointError(f"{index} has no weight_map", index)
        files = [part_dir / name for name in sorted(set(weight_map.values()))]
        for file in files:
            if not file.is_file():
                raise MissingPartError(f"shard {file} named by {index} is missing", file)
        return files
    if (part_dir / SINGLE_NAME).is_file():
        return [part_dir / SINGLE_NAME]
    files = sorted(part_dir.glob("*.safetensors"))
    if files:
        return files
    pickles = sorted({p for pattern in PICKLE_PATTERNS for p in part_dir.glob(pattern)})
    if pickles:
        awq = [p for p in pickles if "awq" in p.name.lower() and p.suffix == ".pt"]
        way = (f"it is a TinyChat / llm-awq int4 checkpoint: convert it with `vila-ros convert-awq "
               f"{part_dir.parent} DST` and load DST with precision int4") if awq else \
            f"convert {part_dir} to safetensors"
        raise PickleRefusedError(
            f"{(awq or pickles)[0]}: pickle weights are refused (unpickling executes code); {way}", (awq or pickles)[0])
    raise MissingPartError(f"no weights in {part_dir} (expected {INDEX_NAME} or {SINGLE_NAME})", part_dir / SINGLE_NAME)


@torch.no_grad()
def load_part(module: nn.Module, part_dir: Path, strip_prefix: str = "", optional: tuple[str, ...] = ()) -> None:
    """Copy a part's weights into ``module`` (converting dtype), checking keys and shapes first."""
    expected = module.state_dict(keep_vars=True)
    loaded: set[str] = set()
    files = weight_files(part_dir)
    for file in files:
        try:
            handle = safe_open(str(file), framework="pt", device="cpu")
        except Exception as error:  # safetensors raises its own error types for truncated/invalid headers
            raise CorruptCheckpointError(
                f"cannot read {file} ({file.stat().st_size} bytes): not a complete safetensors file, truncated or "
                f"corrupt ({error})", file) from error
        with handle as f:
            for key in f.keys():
                name = key[len(strip_prefix):] if strip_prefix and key.startswith(strip_prefix) else key
                if name not in expected:
                    hint = (" (an int4 checkpoint written by `vila-ros quantize`: load it with "
                            "vila_ros.model.int4_checkpoint.load_quantized_vila "
                            "or create_engine(..., precision='int4'))"
                            if name.endswith(".qweight") else "")
                    raise WeightKeysError(f"{file}: tensor {key!r} is unknown to the {part_dir.name} config{hint}",
                                          file)
                shape = tuple(f.get_slice(key).get_shape())
                target = expected[name]
                if shape != tuple(target.shape):
                    raise ShapeMismatchError(
                        f"{file}: tensor {key!r} has shape {list(shape)} but {part_dir / 'config.json'} "
                        f"implies {list(target.shape)}",
                        file,
                    )
                target.copy_(f.get_tensor(key))
                loaded.add(name)
    missing = sorted(set(expected) - loaded - set(optional))
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        named = ", ".join(str(f) for f in files)
        raise WeightKeysError(f"{len(missing)} tensors missing from {named}: {shown}", files[0])


def load_tokenizer(llm_dir: Path) -> Any:
    """The LLM's tokenizer, read the way VILA reads it (``use_fast=False, legacy=False``: no dummy space after
    special tokens). A SentencePiece-only directory (VILA1.5-3B/13B, the Yi tokenizer of the 40B) needs the
    ``sentencepiece`` package; without it transformers fails with an unrelated message, so that case is named."""
    from transformers import AutoTokenizer

    if not any((llm_dir / name).is_file() for name in TOKENIZER_FILES):
        raise MissingPartError(
            f"no tokenizer in {llm_dir} (expected tokenizer.json or tokenizer.model)", llm_dir / "tokenizer.json"
        )
    sentencepiece_only = not (llm_dir / "tokenizer.json").is_file()
    if sentencepiece_only:
        try:
            import sentencepiece  # noqa: F401  (transformers' own message for its absence names tiktoken)
        except ImportError:
            raise CorruptCheckpointError(
                f"{llm_dir / 'tokenizer.model'} is a SentencePiece model and the 'sentencepiece' package is not "
                "installed: pip install sentencepiece", llm_dir / "tokenizer.model") from None
    try:
        return AutoTokenizer.from_pretrained(str(llm_dir), local_files_only=True, trust_remote_code=False,
                                             use_fast=False, legacy=False)
    except Exception as error:
        source = llm_dir / ("tokenizer.model" if sentencepiece_only else "tokenizer.json")
        raise CorruptCheckpointError(f"cannot read the tokenizer {source}: {type(error).__name__}: {error}",
                                     source) from error


def load_vila(
    path: str | Path, dtype: str | torch.dtype | None = None, device: str | torch.device = "cpu"
) -> VilaModel:
    """Load a VILA1.5 checkpoint directory. ``dtype`` None keeps the stored ``model_dtype``."""
    root = Path(path)
    config = read_config(root)
    target = parse_dtype(dtype, default=parse_dtype(config.model_dtype))
    vt_dir = root / config.part_dir_name("vision_tower")
    image_processor = ImageProcessor.load(vt_dir / "preprocessor_config.json", aspect_ratio=config.image_aspect_ratio) \
        if (vt_dir / "preprocessor_config.json").is_file() else None
    if image_processor is None:
        raise MissingPartError(f"missing {vt_dir / 'preprocessor_config.json'}", vt_dir / "preprocessor_config.json")
    llm_dir = root / config.part_dir_name("llm")
    tokenizer = load_tokenizer(llm_dir)
    # Check the weight files exist before spending time and memory on the modules.
    for part in PART_NAMES:
        weight_files(root / config.part_dir_name(part))
    model = build_uninitialized(config, target, device, tokenizer=tokenizer, image_processor=image_processor)
    load_weights(model, root, config)
    return model.eval()


def load_weights(model: VilaModel, root: Path, config: VilaConfig) -> None:
    """Fill the three parts of a model built from `config` with the checkpoint's weights at `root`."""
    tied = ("lm_head.weight",) if model.llm.config.tie_word_embeddings else ()
    load_part(model.llm, root / config.part_dir_name("llm"), optional=tied)
    if tied:
        model.llm.tie_weights()
    load_part(model.vision_tower.model, root / config.part_dir_name("vision_tower"), strip_prefix=VILA_STATE_PREFIX)
    load_part(model.mm_projector, root / config.part_dir_name("mm_projector"))


# -- writing ----------------------------------------------------------------------------------------------------------
def _plain_tensor(t: torch.Tensor) -> torch.Tensor:
    # safetensors refuses tensors sharing storage; views (e.g. fused projections) are cloned, the rest written as is.
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    if t._base is not None or not t.is_contiguous():
        t = t.clone()
    return t


def save_part_weights(
    state: dict[str, torch.Tensor], part_dir: Path, max_shard_bytes: int, always_index: bool
) -> list[str]:
    """Write ``state`` as one model.safetensors, or as shards + index (always for llm/, like VILA's files)."""
    for stale in list(part_dir.glob("*.safetensors")) + [part_dir / INDEX_NAME]:
        stale.unlink(missing_ok=True)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    total = 0
    for key, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = tensor
        size += nbytes
        total += nbytes
    meta = {"format": "pt"}
    if len(shards) == 1 and not always_index:
        save_file({k: _plain_tensor(v) for k, v in shards[0].items()}, str(part_dir / SINGLE_NAME), metadata=meta)
        return [SINGLE_NAME]
    names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map: dict[str, str] = {}
    for name, shard in zip(names, shards):
        save_file({k: _plain_tensor(v) for k, v in shard.items()}, str(part_dir / name), metadata=meta)
        weight_map.update({k: name for k in shard})
    with open(part_dir / INDEX_NAME, "w", encoding="utf-8") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2, sort_keys=True)
        f.write("\n")
    return names


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")


def _hf_config_dict(module_config: Any, architecture: str, dtype: torch.dtype, name: str) -> dict[str, Any]:
    data = module_config.to_dict()
    # Classification-head labels mean nothing here, and their int keys come back as strings from JSON.
    for key in ("transformers_version", "id2label", "label2id"):
        data.pop(key, None)
    data.update(architectures=[architecture], dtype=str(dtype).removeprefix("torch."), _name_or_path=name)
    return data


def save_vila(model: VilaModel, path: str | Path, max_shard_bytes: int = DEFAULT_SHARD_BYTES) -> Path:
    """Write ``model`` as a VILA1.5 directory (weights in their current dtype: what is saved loads bit-exact)."""
    root = Path(path)
    config = model.config
    dtype = model.dtype
    config.model_dtype = dtype_name(dtype)
    dirs = {part: root / config.part_dir_name(part) for part in PART_NAMES}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)

    # LLM: plain HF Llama / Qwen2 directory, sharded like VILA's; a tied lm_head is the embedding: stored once.
    llm_name = config.llm_cfg.get("_name_or_path", "./llm")
    llm_cfg = _hf_config_dict(model.llm.config, type(model.llm).__name__, dtype, llm_name)
    llm_state = dict(model.llm.state_dict())
    if model.llm.config.tie_word_embeddings:
        llm_state.pop("lm_head.weight", None)
    save_part_weights(llm_state, dirs["llm"], max_shard_bytes, always_index=True)
    _write_json(dirs["llm"] / "config.json", llm_cfg)
    if model.tokenizer is not None:
        model.tokenizer.save_pretrained(str(dirs["llm"]))

    vt = model.vision_tower.model
    vt_dtype = vt.embeddings.patch_embedding.weight.dtype
    vt_name = config.vision_tower_cfg.get("_name_or_path", "./vision_tower")
    vt_cfg = _hf_config_dict(vt.config, "SiglipVisionModel", vt_dtype, vt_name)
    vt_state = {VILA_STATE_PREFIX + k: v for k, v in vt.state_dict().items()}
    save_part_weights(vt_state, dirs["vision_tower"], max_shard_bytes, always_index=False)
    _write_json(dirs["vision_tower"] / "config.json", vt_cfg)
    model.image_processor.save(dirs["vision_tower"] / "preprocessor_config.json")

    proj_cfg = dict(config.mm_projector_cfg)
    proj_cfg.update(
        architectures=["MultimodalProjector"], model_type="v2l_projector", mm_projector_type=config.mm_projector_type,
        dtype=str(model.mm_projector_dtype).removeprefix("torch."),
    )
    proj_cfg.setdefault("_name_or_path", "./mm_projector")
    save_part_weights(dict(model.mm_projector.state_dict()), dirs["mm_projector"], max_shard_bytes, always_index=False)
    _write_json(dirs["mm_projector"] / "config.json", {k: v for k, v in proj_cfg.items() if k != "_name_or_path"})

    config.llm_cfg, config.vision_tower_cfg, config.mm_projector_cfg = llm_cfg, vt_cfg, proj_cfg
    config.save(root / "config.json")
    return root


def checkpoint_bytes(path: str | Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
