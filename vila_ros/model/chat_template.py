"""The tokenizer's own chat template, which NVILA prompts with when its config.json names none, matched to ours.

Templates stay data (model/templates.py): the jinja text is only rendered once, on a probe question, to find which
of our templates builds the same string; a template none of ours matches is refused by the loader.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from vila_ros.model.templates import IMAGE_PLACEHOLDER, TEMPLATES


class ChatTemplateError(ValueError):
    """The tokenizer's chat template cannot be read (``broken``) or matches none of ours; ``path`` is its file."""

    def __init__(self, message: str, path: Path, broken: bool):
        super().__init__(f"{path}: {message}")
        self.path, self.broken = path, broken


def template_of_llm_dir(llm_dir: Path) -> str:
    """Our template for an NVILA checkpoint whose config.json names no chat_template: the one that renders like
    the tokenizer's own (Qwen2's standard when the tokenizer has none); ChatTemplateError else."""
    path = llm_dir / "tokenizer_config.json"
    try:
        path, source = chat_template_source(llm_dir)
        name, rendered = template_of_chat_template(source) if source else ("qwen2", "")
    except Exception as error:  # bad JSON, and jinja2 raises many types for a broken template
        raise ChatTemplateError(f"cannot read its chat_template ({error})", path, broken=True) from error
    if name is None:
        raise ChatTemplateError(f"its chat_template matches none of our templates (it renders {rendered!r}); name "
                                "one in config.json 'conv_template'", path, broken=False)
    return name


def chat_template_source(llm_dir: Path) -> tuple[Path, str | None]:
    """The jinja text and its file: tokenizer_config.json's ``chat_template`` (transformers 4, NVILA's files), else
    chat_template.jinja (transformers 5)."""
    import json

    path = llm_dir / "tokenizer_config.json"
    source = json.loads(path.read_text(encoding="utf-8")).get("chat_template") if path.is_file() else None
    if not source and (llm_dir / "chat_template.jinja").is_file():
        path = llm_dir / "chat_template.jinja"
        source = path.read_text(encoding="utf-8")
    return path, (str(source) if source else None)


def template_of_chat_template(source: str, candidates: Sequence[str] = ("qwen2", "nvila_qwen2", "hermes-2")
                              ) -> tuple[str | None, str]:
    """Which of ``candidates`` renders an image question exactly as the jinja chat template ``source`` does, and
    that rendering; None when none does."""
    import jinja2.sandbox

    probe = IMAGE_PLACEHOLDER + "Is the path clear?"
    rendered = jinja2.sandbox.ImmutableSandboxedEnvironment().from_string(source).render(
        messages=[{"role": "user", "content": probe}], add_generation_prompt=True)
    for name in candidates:
        if TEMPLATES[name].build_prompt(probe, 1) == rendered:
            return name, rendered
    return None, rendered
