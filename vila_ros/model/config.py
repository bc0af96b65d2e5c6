"""VilaConfig: the root ``config.json`` of VILA1.5 and NVILA-Lite checkpoints (``model_type: llava_llama``, the
original three-part layout, not the ``-hf`` one) plus three keys of ours.

The file is read and written in VILA's own shape so a checkpoint we save loads in VILA's code and vice versa:
``llm_cfg`` / ``vision_tower_cfg`` / ``mm_projector_cfg`` are the part configs, each ``_name_or_path`` ending in
``./llm`` etc. (the part directory is resolved from its basename). Our additions, ignored by VILA:
``conv_template`` (the prompt template the model was trained with: wrong templates are the most reported cause
of garbage output), ``mm_projector_token_order`` ("vila1.5" | "nvila") and ``num_video_frames``.

NVILA-Lite (NVlabs/VILA main since Dec 2024) loads too: a Qwen2 LLM (``llm_cfg.model_type: qwen2``), SigLIP at
448 px, the ``mlp_downsample_2x2_fix`` / ``mlp_downsample_3x3_fix`` projectors, tiling (``image_aspect_ratio:
dynamic`` with ``min_tiles`` / ``max_tiles``) and its image encoder, which follows each image's features with the
embedding of ``end_tokens`` ("\\n"). Such a config is recognised by its ``image_encoder`` key (NVILA's config
class writes it; VILA1.5's has none). Dynamic S2 (NVILA non-Lite) is refused, naming its key.
No torch import here: the CLI and other layers read configs without loading the ML stack.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import re
from pathlib import Path
from typing import Any

TOKEN_ORDERS = ("vila1.5", "nvila")
ASPECT_RATIOS = ("resize", "pad", "dynamic")
RESIZES = ("pil", "opencv", "nearest")  # image resizes of model/preprocess.py (its docstring)
# Projectors that merge k x k patches: type -> k. The "_fix" ones zero-pad the grid to a multiple of k first and
# emit merged tokens row-major whatever mm_projector_token_order says (that is how NVILA's code defines them).
DOWNSAMPLE_FACTORS = {"mlp_downsample": 2, "mlp_downsample_2x2_fix": 2, "mlp_downsample_3x3_fix": 3}
LLM_TYPES = ("llama", "qwen2")
IMAGE_ENCODERS = ("llava.model.encoders.BasicImageEncoder",)
PART_NAMES = ("llm", "vision_tower", "mm_projector")

# Keys that VilaConfig owns; everything else in a root config.json is kept in `extra` and written back unchanged.
_OWN_KEYS = (
    "llm_cfg", "vision_tower_cfg", "mm_projector_cfg", "hidden_size", "mm_hidden_size", "mm_vision_select_layer",
    "mm_vision_select_feature", "image_aspect_ratio", "mm_use_im_start_end", "mm_use_im_patch_token", "model_dtype",
    "num_video_frames", "conv_template", "mm_projector_token_order",
)


@dataclasses.dataclass
class VilaConfig:
    llm_cfg: dict[str, Any]
    vision_tower_cfg: dict[str, Any]
    mm_projector_cfg: dict[str, Any]
    mm_vision_select_layer: int = -2
    mm_vision_select_feature: str = "cls_patch"
    image_aspect_ratio: str = "resize"
    mm_use_im_start_end: bool = False
    mm_use_im_patch_token: bool = False
    model_dtype: str = "torch.bfloat16"
    num_video_frames: int = 8
    conv_template: str = "vicuna_v1"
    mm_projector_token_order: str = "vila1.5"
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mm_projector_token_order not in TOKEN_ORDERS:
            raise ValueError(
                f"mm_projector_token_order must be one of {TOKEN_ORDERS}, got {self.mm_projector_token_order!r}"
            )
        if self.mm_vision_select_feature not in ("cls_patch", "patch"):
            raise ValueError(f"unsupported mm_vision_select_feature {self.mm_vision_select_feature!r}")
        if self.image_aspect_ratio not in ASPECT_RATIOS:
            raise ValueError(
                f"unsupported image_aspect_ratio {self.image_aspect_ratio!r} ({' | '.join(ASPECT_RATIOS)})")

    # -- derived sizes -------------------------------------------------------------------------------------------
    @property
    def hidden_size(self) -> int:
        return int(self.llm_cfg["hidden_size"])

    @property
    def mm_hidden_size(self) -> int:
        return int(self.vision_tower_cfg["hidden_size"])

    @property
    def mm_projector_type(self) -> str:
        return str(self.mm_projector_cfg.get("mm_projector_type", "mlp_downsample"))

    @property
    def llm_type(self) -> str:
        return str(self.llm_cfg.get("model_type") or "llama")

    @property
    def is_nvila(self) -> bool:
        """An NVILA-family config (its ``image_encoder`` key): NVILA's prompt and image-encoder conventions apply."""
        return "image_encoder" in self.extra

    @property
    def image_encoder(self) -> dict[str, Any]:
        """NVILA's ``image_encoder`` (stored as a JSON string): which text frames each image's features."""
        return parse_image_encoder(self.extra.get("image_encoder"))

    @property
    def image_end_text(self) -> str:
        """Text whose embedding follows each image's features: NVILA's BasicImageEncoder default "\\n"; none in
        VILA1.5."""
        if not self.is_nvila:
            return ""
        return str(self.image_encoder.get("end_tokens", "\n") or "")

    @property
    def tiling(self) -> bool:
        return self.image_aspect_ratio == "dynamic"

    @property
    def min_tiles(self) -> int:
        return int(self.extra.get("min_tiles", 1) or 1)

    @property
    def max_tiles(self) -> int:
        return int(self.extra.get("max_tiles", 12) or 12)

    @property
    def image_size(self) -> int:
        return int(self.vision_tower_cfg["image_size"])

    @property
    def tokens_per_image(self) -> int:
        """Projected tokens of one image (or tile): 196 for SigLIP-384 + mlp_downsample, 121 for SigLIP-448 +
        mlp_downsample_3x3_fix. The embeddings of ``image_end_text`` come on top (VilaModel.tokens_per_image)."""
        side = self.image_size // int(self.vision_tower_cfg["patch_size"])
        tokens = side * side
        if self.mm_vision_select_feature == "patch":
            tokens -= 1  # VILA drops token 0 (a CLS token for towers that have one)
        factor = DOWNSAMPLE_FACTORS.get(self.mm_projector_type)
        if factor:
            grid = int(math.isqrt(tokens))
            tokens = (-(-grid // factor)) ** 2
        return tokens

    def part_dir_name(self, part: str) -> str:
        """Directory of a part under the checkpoint root: basename of its cfg's ``_name_or_path``."""
        cfg = getattr(self, f"{part}_cfg")
        name = str(cfg.get("_name_or_path") or part).rstrip("/")
        return Path(name).name or part

    # -- (de)serialisation ---------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "architectures": ["LlavaLlamaModel"],
            "model_type": "llava_llama",
        }
        out.update(copy.deepcopy(self.extra))
        for part in PART_NAMES:
            cfg = copy.deepcopy(getattr(self, f"{part}_cfg"))
            cfg.setdefault("_name_or_path", f"./{part}")
            out[f"{part}_cfg"] = cfg
        out.update(
            hidden_size=self.hidden_size,
            mm_hidden_size=self.mm_hidden_size,
            mm_vision_select_layer=self.mm_vision_select_layer,
            mm_vision_select_feature=self.mm_vision_select_feature,
            image_aspect_ratio=self.image_aspect_ratio,
            mm_use_im_start_end=self.mm_use_im_start_end,
            mm_use_im_patch_token=self.mm_use_im_patch_token,
            model_dtype=self.model_dtype,
            num_video_frames=self.num_video_frames,
            conv_template=self.conv_template,
            mm_projector_token_order=self.mm_projector_token_order,
        )
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "VilaConfig":
        missing = [f"{p}_cfg" for p in PART_NAMES if not isinstance(data.get(f"{p}_cfg"), dict)]
        if missing:
            raise KeyError(f"not a VILA1.5 config: missing {', '.join(missing)}")
        defaults = {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
        kwargs: dict[str, Any] = {}
        for key in _OWN_KEYS:
            if key in ("hidden_size", "mm_hidden_size"):
                continue  # derived from the part configs
            if key in data:
                kwargs[key] = copy.deepcopy(data[key])
        if "conv_template" not in data:
            kwargs["conv_template"] = infer_conv_template(data)
        if kwargs.get("mm_projector_token_order") is None:
            # NVILA's code emits merged tokens row-major for every downsampling projector
            kwargs["mm_projector_token_order"] = "nvila" if "image_encoder" in data \
                else defaults["mm_projector_token_order"]
        not_extra = {*_OWN_KEYS, "architectures", "model_type"}
        extra = {k: copy.deepcopy(v) for k, v in data.items() if k not in not_extra}
        return cls(**kwargs, extra=extra)

    @classmethod
    def load(cls, path: str | Path) -> "VilaConfig":
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))

    def save(self, path: str | Path) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2, sort_keys=True)
            f.write("\n")


def parse_image_encoder(value: Any) -> dict[str, Any]:
    """NVILA's ``image_encoder`` entry (a JSON string in config.json, or a dict) as a dict; {} when absent."""
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise ValueError(f"image_encoder is not JSON: {error}") from error
    if not isinstance(value, dict):
        raise ValueError(f"image_encoder must be a JSON object, got {value!r}")
    return value


def unsupported_features(data: dict[str, Any]) -> list[str]:
    """What a checkpoint's config asks for that this package does not implement, each naming the config key that
    reveals it, so a refusal says why instead of failing later on a shape."""
    found: list[str] = []
    tower = data.get("vision_tower_cfg") or {}
    tower_kind = " ".join(str(tower.get(key, "")) for key in ("model_type", "architectures", "_name_or_path"))
    if "intern" in tower_kind.lower():
        found.append(f"the InternViT vision tower (vision_tower_cfg: {tower.get('model_type') or tower_kind.strip()!r},"
                     " VILA1.5-40B) is not supported; only SigLIP towers are")
    if data.get("s2"):
        found.append(f"S2 multi-scale vision (config.json 's2': true, 's2_scales': {data.get('s2_scales')!r}, "
                     "VILA1.5-3b-s2) is not supported")
    aspect = data.get("image_aspect_ratio", "resize")
    if data.get("dynamic_s2") or aspect == "dynamic_s2":
        found.append(f"dynamic S2 tiling (config.json 'dynamic_s2': {data.get('dynamic_s2')!r}, 'image_aspect_ratio': "
                     f"{aspect!r}, NVILA) is not supported; NVILA-Lite's 'dynamic' tiling is")
    elif aspect not in ASPECT_RATIOS:
        found.append(f"image_aspect_ratio {aspect!r} (config.json 'image_aspect_ratio') is not supported; "
                     f"only {', '.join(repr(a) for a in ASPECT_RATIOS)} are")
    if data.get("ps3"):
        found.append("PS3 vision (config.json 'ps3': true) is not supported")
    projector = str((data.get("mm_projector_cfg") or {}).get("mm_projector_type", "mlp_downsample"))
    if projector not in DOWNSAMPLE_FACTORS and projector != "linear" and not re.fullmatch(r"mlp\d+x_gelu", projector):
        found.append(f"the projector mm_projector_cfg.mm_projector_type {projector!r} is not supported; only "
                     f"linear, mlp{{N}}x_gelu, {', '.join(DOWNSAMPLE_FACTORS)} are")
    llm_type = str((data.get("llm_cfg") or {}).get("model_type", ""))
    if llm_type and llm_type not in LLM_TYPES:
        found.append(f"the {llm_type!r} LLM (llm_cfg.model_type) is not supported; only {', '.join(LLM_TYPES)} are")
    try:
        encoder = parse_image_encoder(data.get("image_encoder"))
    except ValueError as error:
        found.append(f"config.json 'image_encoder': {error}")
        encoder = {}
    target = encoder.get("_target_")
    if encoder and target not in IMAGE_ENCODERS:
        found.append(f"the image encoder {target!r} (config.json 'image_encoder') is not supported; only "
                     f"{', '.join(IMAGE_ENCODERS)} is")
    return found


# Public VILA checkpoints store no template; VILA's release scripts pass one per model (docs/checkpoints.md).
YI_VOCAB_SIZE = 64000  # Nous-Hermes-2-Yi-34B, the 40B's LLM


def infer_conv_template(data: dict[str, Any]) -> str:
    """Template for a VILA checkpoint that does not store ours, as VILA's release uses it: 3B/13B vicuna_v1,
    8B llama_3 (its 128k Llama-3 vocabulary), 40B hermes-2 (its Yi vocabulary or InternViT tower). A Qwen2 LLM
    (NVILA-Lite): NVILA's own qwen2 template when the config names it (``chat_template: qwen2``), else the
    tokenizer's, Qwen2's standard one until checkpoint.read_config matches the tokenizer's own chat template
    (model/chat_template.py)."""
    llm = data.get("llm_cfg", {})
    if str(llm.get("model_type", "")) == "qwen2":
        named = data.get("chat_template")
        return "nvila_qwen2" if named == "qwen2" else "qwen2"
    tower = data.get("vision_tower_cfg", {})
    name = (str(llm.get("_name_or_path", "")) + " " + str(data.get("_name_or_path", ""))).lower()
    tower_kind = " ".join(str(v) for v in (tower.get("model_type", ""), tower.get("architectures", ""),
                                           tower.get("_name_or_path", ""), data.get("mm_vision_tower", ""))).lower()
    vocab = int(llm.get("vocab_size", 0) or 0)
    if vocab >= 128000 or "llama-3" in name or "llama3" in name:
        return "llama_3"
    if vocab == YI_VOCAB_SIZE or "hermes" in name or "yi" in str(llm.get("model_type", "")).lower() \
            or "40b" in name or "intern" in tower_kind:
        return "hermes-2"
    return "vicuna_v1"


def dtype_name(dtype: Any) -> str:
    """torch dtype -> VILA's ``model_dtype`` string ("torch.bfloat16")."""
    return str(dtype) if str(dtype).startswith("torch.") else f"torch.{dtype}"
