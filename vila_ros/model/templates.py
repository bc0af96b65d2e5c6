"""Conversation templates of VILA1.5 and NVILA-Lite, reproducing the strings VILA's ``Conversation.get_prompt``
and NVILA's chat templates build.

Four separator styles cover every VILA1.5 size: ``two`` (vicuna_v1), ``mpt`` (hermes-2, and the Qwen2 ChatML
templates of NVILA-Lite), ``llama_3`` and ``plain``. A template is data; ``render`` turns (user,
assistant-or-None) turns into the prompt string and ``build_prompt`` is the single-question case the engine
uses. The model stops at ``stop_strings``.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Sequence

IMAGE_PLACEHOLDER = "<image>"

_VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
_LLAMA3_SYSTEM = (
    "You are a helpful language and vision assistant. You are able to understand the visual content that the user "
    "provides, and assist the user with a variety of tasks using natural language."
)
_LLAMA3_HEADER = "<|start_header_id|>{}<|end_header_id|>\n\n"


@dataclasses.dataclass(frozen=True)
class Template:
    name: str
    style: str  # "two" | "mpt" | "llama_3" | "plain"
    system: str  # default system text (the part a user may replace)
    system_prefix: str  # markup before the system text, e.g. the llama-3 system header
    roles: tuple[str, str]
    sep: str
    sep2: str
    stop_strings: tuple[str, ...]
    # What each image adds in front of a question that holds no <image>: VILA1.5's run script writes "<image>\n"
    # per image; NVILA's generate_content writes "<image>" per image (its encoder appends the "\n" embedding).
    image_text: str = IMAGE_PLACEHOLDER + "\n"
    strip: bool = False  # NVILA strips each message (placeholders included) before templating

    def render(self, turns: Sequence[tuple[str, str | None]], system: str | None = None) -> str:
        """Prompt for ``turns`` = [(user, assistant or None), ...]; a final None leaves the assistant to speak."""
        system_text = self.system_prefix + (self.system if system is None else system)
        messages: list[tuple[str, str | None]] = []
        for user, assistant in turns:
            messages.append((self.roles[0], user))
            messages.append((self.roles[1], assistant))
        if self.style == "two":
            out = system_text + self.sep
            for i, (role, text) in enumerate(messages):
                out += f"{role}: {text}{(self.sep, self.sep2)[i % 2]}" if text else f"{role}:"
            return out
        if self.style == "mpt":
            out = system_text + self.sep
            for role, text in messages:
                out += role + text + self.sep if text else role
            return out
        if self.style == "llama_3":
            out = system_text + self.sep
            for i, (role, text) in enumerate(messages):
                # VILA closes the last message of a finished conversation with sep2, the others with sep.
                out += role + text + (self.sep if i < len(messages) - 1 else self.sep2) if text else role
            return out
        if self.style == "plain":
            out = system_text
            for i, (role, text) in enumerate(messages):
                out += text + (self.sep, self.sep2)[i % 2] if text else ""
            return out
        raise ValueError(f"unknown separator style {self.style!r}")

    def build_prompt(self, question: str, num_images: int = 0, system: str | None = None) -> str:
        """One question with ``num_images`` images, ready for the assistant's answer."""
        text = add_image_placeholders(question, num_images, self.image_text)
        return self.render([(text.strip() if self.strip else text, None)], system=system)

    @property
    def answer_suffix(self) -> str:
        """What closes an assistant answer in training text (the string the model learns to stop with)."""
        return {"two": self.sep2, "mpt": self.sep, "llama_3": self.sep2, "plain": self.sep2}[self.style]


def add_image_placeholders(question: str, num_images: int, image_text: str = IMAGE_PLACEHOLDER + "\n") -> str:
    """VILA's run script: a question without ``<image>`` gets ``image_text`` ("<image>\\n") once per image in front;
    a question that holds placeholders is used as it is (its count must then match the images)."""
    if num_images and IMAGE_PLACEHOLDER not in question:
        return image_text * num_images + question
    return question


def count_images(text: str) -> int:
    return len(re.findall(re.escape(IMAGE_PLACEHOLDER), text))


TEMPLATES: dict[str, Template] = {
    "vicuna_v1": Template(
        name="vicuna_v1", style="two", system=_VICUNA_SYSTEM, system_prefix="",
        roles=("USER", "ASSISTANT"), sep=" ", sep2="</s>", stop_strings=("</s>",),
    ),
    "hermes-2": Template(
        name="hermes-2", style="mpt", system="Answer the questions.", system_prefix="<|im_start|>system\n",
        roles=("<|im_start|>user\n", "<|im_start|>assistant\n"), sep="<|im_end|>", sep2="<|im_end|>",
        stop_strings=("<|im_end|>",),
    ),
    # Later VILA code and TensorRT-LLM: the assistant speaks under an "assistant" header and turns end in <|eot_id|>.
    "llama_3": Template(
        name="llama_3", style="llama_3", system=_LLAMA3_SYSTEM,
        system_prefix="<|begin_of_text|>" + _LLAMA3_HEADER.format("system"),
        roles=(_LLAMA3_HEADER.format("user"), _LLAMA3_HEADER.format("assistant")),
        sep="<|eot_id|>", sep2="<|end_of_text|>", stop_strings=("<|eot_id|>", "<|end_of_text|>"),
    ),
    # Release-day Llama-3-VILA1.5-8B code: the assistant turn sits under a "system" header, <|end_of_text|> separators.
    "llama_3_release": Template(
        name="llama_3_release", style="llama_3", system=_LLAMA3_SYSTEM,
        system_prefix="<|begin_of_text|>" + _LLAMA3_HEADER.format("system"),
        roles=(_LLAMA3_HEADER.format("user"), _LLAMA3_HEADER.format("system")),
        sep="<|end_of_text|>", sep2="<|end_of_text|>", stop_strings=("<|end_of_text|>",),
    ),
    # Qwen2's own ChatML template (the tokenizer_config.json chat_template of Qwen2 instruct models), used by NVILA
    # when config.json names no chat_template.
    "qwen2": Template(
        name="qwen2", style="mpt", system="You are a helpful assistant.", system_prefix="<|im_start|>system\n",
        roles=("<|im_start|>user\n", "<|im_start|>assistant\n"), sep="<|im_end|>\n", sep2="<|im_end|>\n",
        stop_strings=("<|im_end|>",), image_text=IMAGE_PLACEHOLDER, strip=True,
    ),
    # NVILA's chat_templates/qwen2.jinja (config.json "chat_template": "qwen2"): its system text has no full stop.
    "nvila_qwen2": Template(
        name="nvila_qwen2", style="mpt", system="You are a helpful assistant", system_prefix="<|im_start|>system\n",
        roles=("<|im_start|>user\n", "<|im_start|>assistant\n"), sep="<|im_end|>\n", sep2="<|im_end|>\n",
        stop_strings=("<|im_end|>",), image_text=IMAGE_PLACEHOLDER, strip=True,
    ),
    # Stage-1 alignment (image-caption pairs): no system text, no roles, "\n" closes each message.
    "plain": Template(
        name="plain", style="plain", system="", system_prefix="", roles=("", ""), sep="\n", sep2="\n",
        stop_strings=("\n",),
    ),
}
ALIASES = {"v1": "vicuna_v1", "llama3": "llama_3", "hermes_2": "hermes-2", "nvila-qwen2": "nvila_qwen2"}


def get_template(name: str) -> Template:
    key = ALIASES.get(name, name)
    try:
        return TEMPLATES[key]
    except KeyError:
        raise KeyError(f"unknown conversation template {name!r}; known: {', '.join(sorted(TEMPLATES))}") from None
