"""Training data: LLaVA-style JSON and an on-the-fly simulator mix, tokenized with a conversation template.

A sample is ``{"input_ids": LongTensor[L], "labels": LongTensor[L], "pixels": FloatTensor[N, 3, S, S]}``: ``input_ids``
hold one IMAGE_TOKEN_INDEX (-200) per image, ``labels`` are IGNORE_INDEX (-100) everywhere except the assistant's
answers (their text and the template's closing string, e.g. `` yes</s>``), image slots included.

Tokenization is segment by segment: the text before each answer (system, user turn, assistant role) and each answer
are tokenized separately and concatenated, so the prompt part of the first turn is exactly what the engine feeds at
inference (``tokenize_with_images`` of ``template.build_prompt``) and no BPE merge crosses a prompt/answer border.
Stage 1 uses VILA's ``plain`` template: the human turn is reduced to its image placeholders, the answer is the caption.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from vila_ros import tasks
from vila_ros.model.prompt import IGNORE_INDEX, IMAGE_TOKEN_INDEX, tokenize_with_images
from vila_ros.model.templates import IMAGE_PLACEHOLDER, Template, count_images, get_template

_USER = ("human", "user")
_ASSISTANT = ("gpt", "assistant", "model")

ONSET_SPAN = 3.0  # seconds either side of an event's onset for ``onset_windows``
CUT_SEED_OFFSET = 4_500_000  # the scene before a cut: a train seed of its own, never the window's scene
SIM_KINDS = ("video_caption", "video_alert", "video_qa", "frame", "text", "stream_window", "unfamiliar")
DEFAULT_SIM_MIX = {"video_caption": 0.2, "video_alert": 0.2, "video_qa": 0.2, "frame": 0.1, "text": 0.1,
                   "stream_window": 0.15, "unfamiliar": 0.05}


class DataError(ValueError):
    """A dataset record that cannot be used; the message names the file and record."""


# --------------------------------------------------------------------------------------------- tokenization
def conversation_turns(conversations: Sequence[dict]) -> tuple[list[tuple[str, str]], str | None]:
    """LLaVA ``conversations`` -> ([(user, assistant), ...], system or None)."""
    system = None
    turns: list[tuple[str, str]] = []
    pending: str | None = None
    for message in conversations:
        role = str(message.get("from", "")).lower()
        value = str(message.get("value", ""))
        if role == "system":
            system = value
        elif role in _USER:
            pending = value if pending is None else pending + "\n" + value
        elif role in _ASSISTANT:
            if pending is None:
                continue  # an answer without a question (LLaVA data starting with gpt): skipped like VILA does
            turns.append((pending, value))
            pending = None
        else:
            raise DataError(f"unknown conversation role {message.get('from')!r}")
    if not turns:
        raise DataError("conversation holds no (human, gpt) pair")
    return turns, system


def _strip_bos(ids: list[int], tokenizer: Any) -> list[int]:
    bos = tokenizer.bos_token_id
    return ids[1:] if bos is not None and ids and ids[0] == bos else ids


def encode_turns(
    turns: Sequence[tuple[str, str]],
    tokenizer: Any,
    template: Template | str,
    system: str | None = None,
) -> tuple[list[int], list[int]]:
    """(user, assistant) turns -> (input_ids, labels); labels supervise only the assistant's answers."""
    tpl = get_template(template) if isinstance(template, str) else template
    if tpl.style == "plain":
        # VILA's stage-1 format: the images, then the caption; the question text is dropped.
        turns = [("".join(IMAGE_PLACEHOLDER for _ in range(count_images(u))) or u, a) for u, a in turns]
    full = tpl.render(list(turns), system=system)
    ids: list[int] = []
    labels: list[int] = []
    pos = 0
    for i, (_, answer) in enumerate(turns):
        prompt = tpl.render(list(turns[:i]) + [(turns[i][0], None)], system=system)
        if not full.startswith(prompt):
            raise DataError(f"template {tpl.name} does not render turn {i} as a prefix of the conversation")
        context = full[pos:len(prompt)]
        start = full.find(answer, len(prompt)) if answer else len(prompt)
        if start < 0:
            raise DataError(f"answer of turn {i} not found in the rendered conversation")
        end = start + len(answer)
        for closer in (tpl.answer_suffix, tpl.sep):
            if closer and full.startswith(closer, end):
                end += len(closer)
                break
        piece = tokenize_with_images(context, tokenizer)
        if i:
            piece = _strip_bos(piece, tokenizer)
        ids += piece
        labels += [IGNORE_INDEX] * len(piece)
        answer_ids = _strip_bos(list(tokenizer(full[len(prompt):end]).input_ids), tokenizer)
        ids += answer_ids
        labels += answer_ids
        pos = end
    return ids, labels


def encode_conversation(conversations: Sequence[dict], tokenizer: Any, template: Template | str,
                        num_images: int) -> tuple[list[int], list[int]]:
    """LLaVA ``conversations`` with ``num_images`` images -> (input_ids, labels).

    Records whose human turns carry no ``<image>`` get "<image>\\n" per image before the first question (LLaVA's
    convention); otherwise the placeholder count must equal ``num_images``.
    """
    turns, system = conversation_turns(conversations)
    placeholders = sum(count_images(u) + count_images(a) for u, a in turns)
    if placeholders == 0 and num_images:
        turns[0] = ((IMAGE_PLACEHOLDER + "\n") * num_images + turns[0][0], turns[0][1])
    elif placeholders != num_images:
        raise DataError(f"{placeholders} <image> placeholders but {num_images} images")
    if any(count_images(a) for _, a in turns):
        raise DataError("<image> in an assistant answer")
    ids, labels = encode_turns(turns, tokenizer, template, system)
    return ids, labels


def truncate(ids: list[int], labels: list[int], num_images: int, tokens_per_image: int,
             max_length: int | None) -> tuple[list[int], list[int], int]:
    """Cut a sample so its spliced length (text + tokens_per_image per image) fits ``max_length``; images whose slot
    falls beyond the cut are dropped (returns the number of images kept)."""
    if not max_length:
        return ids, labels, num_images
    out_len = 0
    for n, tok in enumerate(ids):
        width = tokens_per_image if tok == IMAGE_TOKEN_INDEX else 1
        if out_len + width > max_length:
            ids, labels = ids[:n], labels[:n]
            break
        out_len += width
    return ids, labels, ids.count(IMAGE_TOKEN_INDEX)


def make_sample(ids: list[int], labels: list[int], pixels: torch.Tensor | None) -> dict[str, torch.Tensor]:
    n = ids.count(IMAGE_TOKEN_INDEX)
    if pixels is None:
        pixels = torch.zeros(0, 3, 1, 1)
    return {"input_ids": torch.tensor(ids, dtype=torch.long), "labels": torch.tensor(labels, dtype=torch.long),
            "pixels": pixels[:n]}


# ------------------------------------------------------------------------------------------------- datasets
def _read_rgb(path: Path) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise DataError(f"cannot read image {path}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


class LlavaDataset(torch.utils.data.Dataset):
    """LLaVA-style JSON (a list of records, or JSON lines): ``image`` is a path or a list of paths relative to
    ``image_folder`` (default: the JSON file's folder); records without ``image`` are text-only."""

    def __init__(self, path: str | Path, tokenizer: Any, image_processor: Any, template: str,
                 image_folder: str | Path | None = None, max_length: int | None = None, tokens_per_image: int = 1):
        self.path = Path(path)
        text = self.path.read_text(encoding="utf-8")
        try:
            records = json.loads(text)
        except json.JSONDecodeError:
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
        if not isinstance(records, list) or not records:
            raise DataError(f"{self.path}: expected a non-empty JSON list of records")
        self.records = records
        self.folder = Path(image_folder) if image_folder else self.path.parent
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.template = template
        self.max_length = max_length
        self.tokens_per_image = tokens_per_image

    def __len__(self) -> int:
        return len(self.records)

    def image_paths(self, record: dict) -> list[Path]:
        image = record.get("image")
        if image is None:
            return []
        names = [image] if isinstance(image, str) else list(image)
        return [Path(n) if Path(n).is_absolute() else self.folder / n for n in names]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        record = self.records[index]
        where = f"{self.path} record {index} (id {record.get('id', '?')})"
        try:
            paths = self.image_paths(record)
            ids, labels = encode_conversation(record["conversations"], self.tokenizer, self.template, len(paths))
        except (DataError, KeyError) as error:
            raise DataError(f"{where}: {error}") from error
        ids, labels, kept = truncate(ids, labels, len(paths), self.tokens_per_image, self.max_length)
        pixels = self.image_processor([_read_rgb(p) for p in paths[:kept]]) if kept else None
        return make_sample(ids, labels, pixels)


def render_sizes_of(render_size: Sequence[int] | Sequence[Sequence[int]] | None,
                    image_size: int) -> list[tuple[int, int]]:
    """The (width, height) sizes a ``render_size`` option names: none (the model's square input), one [w, h], or a
    list of them."""
    if not render_size:
        return [(image_size, image_size)]
    sizes = [render_size] if all(isinstance(v, (int, np.integer)) for v in render_size) else list(render_size)
    if not all(isinstance(size, Sequence) and len(size) == 2 and all(isinstance(v, (int, np.integer)) and v > 0
                                                                      for v in size) for size in sizes):
        raise ValueError(f"render_size must be [width, height] or a list of them, positive integers: {render_size}")
    return [(int(w), int(h)) for w, h in sizes]


class SimDataset:
    """Samples rendered on the fly by ``vila_ros.sim`` (no files), deterministic in (seed, index).

    Kinds (weights in ``mix``): ``video_caption`` (clip + DESCRIBE_PROMPT -> caption), ``video_alert`` (clip +
    ALERT_PROMPT -> alert answer), ``video_qa`` (clip + 1..qa_turns QA pairs, temporal and single-frame),
    ``frame`` (one frame + its event-free caption or single-frame QA), ``text`` (text-only instructions),
    ``stream_window`` (what the node asks: a window of 1..num_frames frames ending anywhere in a 20-60 s scene,
    before, during or after its event, + caption or alert answer of exactly those frames), ``unfamiliar``
    (out-of-world frames, ``sim.unfamiliar``: "An unfamiliar scene." and no alert).
    ``own_event_qa``: probability that a clip with an event is asked about that event in its video_qa turns.
    ``onset_windows``: share of stream windows (of scenes with an event) that end within ``ONSET_SPAN`` seconds of
    the onset: the windows where "not yet" and "now" differ by a frame or two, which uniform ends rarely draw.
    ``cut_windows``: share of stream windows of 2 or more frames that cross a scene cut: the last frames of another
    scene of the same family, then the first of this one. The node's buffer holds such windows for a moment after
    every cut of a feed; a cut is no event, and the answer is the truth of the frames after it alone.
    ``full_windows``: share of stream windows with all ``num_frames`` frames, the window the node asks about once
    its buffer has filled (every check but the first few of a feed); the rest are 1..num_frames, uniform.
    ``focus_events``: {"category" or "family/category": share} of stream windows whose scene has that event (the
    rest as the seed chooses): more onsets of the events a model misses, at the same number of steps.
    ``render_size``: (width, height) stream windows are rendered at, then squashed to the model's input by its own
    resize, as the node's camera frames are (default: the input's square, rendered directly); or a list of such
    sizes, one drawn per window: cameras differ, and a model trained on one frame size loses attributes on another.
    Scenario seeds come from ``split`` (train / val / test never overlap).
    """

    def __init__(self, tokenizer: Any, image_processor: Any, template: str, image_size: int, num_frames: int,
                 mix: dict[str, float] | None = None, split: str = "train", seed: int = 0, qa_turns: int = 2,
                 clip_fps: float = tasks.CLIP_FPS, max_length: int | None = None, tokens_per_image: int = 1,
                 own_event_qa: float = 0.0, onset_windows: float = 0.0, cut_windows: float = 0.0,
                 full_windows: float = 0.0, focus_events: dict[str, float] | None = None,
                 render_size: Sequence[int] | Sequence[Sequence[int]] | None = None):
        from vila_ros.sim.generate import event_of
        from vila_ros.sim.writers import text_instructions

        self.mix = dict(mix or DEFAULT_SIM_MIX)
        unknown = set(self.mix) - set(SIM_KINDS)
        if unknown:
            raise ValueError(f"unknown sim kinds {sorted(unknown)}; known: {', '.join(SIM_KINDS)}")
        self.kinds = [k for k, w in self.mix.items() if w > 0]
        weights = np.array([self.mix[k] for k in self.kinds], dtype=float)
        self.probs = weights / weights.sum()
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.template = template
        self.image_size = image_size
        self.num_frames = num_frames
        self.clip_fps = clip_fps
        self.split = split
        self.seed = seed
        self.qa_turns = qa_turns
        self.max_length = max_length
        self.tokens_per_image = tokens_per_image
        self.own_event_qa = own_event_qa
        self.onset_windows = onset_windows
        self.cut_windows = cut_windows
        self.full_windows = full_windows
        self.render_sizes = render_sizes_of(render_size, image_size)
        self.focus = [(event_of(key), float(share)) for key, share in (focus_events or {}).items()]
        if any(share < 0 for _, share in self.focus) or sum(share for _, share in self.focus) > 1:
            raise ValueError(f"focus_events shares must be >= 0 and sum to at most 1: {focus_events}")
        self.instructions = text_instructions()

    def conversation(self, index: int) -> tuple[list[dict], list[np.ndarray], str]:
        """(LLaVA conversations, frames, kind) of sample ``index``."""
        from vila_ros.sim import make_clip, split_seeds

        rng = np.random.default_rng([self.seed, int(index), 7151])
        kind = self.kinds[int(rng.choice(len(self.kinds), p=self.probs))]
        if kind == "text":
            n = int(rng.integers(1, 3))
            pairs = [self.instructions[i] for i in rng.choice(len(self.instructions), size=n, replace=False)]
            return _conv(pairs, 0), [], kind
        if kind == "unfamiliar":
            from vila_ros.sim.unfamiliar import unfamiliar_frames

            frames = unfamiliar_frames(rng, int(rng.integers(1, self.num_frames + 1)), self.image_size)
            pair = (tasks.DESCRIBE_PROMPT, tasks.UNFAMILIAR_SCENE) if rng.random() < 0.5 else \
                (tasks.ALERT_PROMPT, tasks.NO_ALERT_ANSWER)
            return _conv([pair], len(frames)), frames, kind
        scene_seed = split_seeds(self.split, 1, int(rng.integers(0, 9_000_000)))[0]
        if kind == "stream_window":
            return self._stream_window(scene_seed, rng)
        clip = make_clip(scene_seed, num_frames=self.num_frames, clip_fps=self.clip_fps, size=self.image_size)
        truth = clip.truth
        if kind == "video_caption":
            return _conv([(tasks.DESCRIBE_PROMPT, truth.caption)], len(clip.frames)), clip.frames, kind
        if kind == "video_alert":
            return _conv([(tasks.ALERT_PROMPT, truth.alert_answer)], len(clip.frames)), clip.frames, kind
        if kind == "video_qa":
            n = int(rng.integers(1, self.qa_turns + 1))
            qa = [truth.qa[i] for i in rng.choice(len(truth.qa), size=min(n, len(truth.qa)), replace=False)]
            own = [q for q in truth.qa if q["key"] in truth.categories]
            if own and own[0] not in qa and rng.random() < self.own_event_qa:
                # Asked at random, temporal questions are "yes" 1 time in 10: a model can score 0.9 on them by
                # always saying "no". Asking about the clip's own event as often makes "yes" a visual judgement.
                qa[int(rng.integers(len(qa)))] = own[0]
            return _conv([(q["question"], q["answer"]) for q in qa], len(clip.frames)), clip.frames, kind
        # one frame: its event-free caption or a question one frame can answer
        i = int(rng.integers(len(clip.frames)))
        one = clip.scenario.truth([clip.stamps[i]])
        if rng.random() < 0.4:
            pairs = [(tasks.DESCRIBE_PROMPT, one.static_caption)]
        else:
            qa = [q for q in one.qa if not q["temporal"]]
            pairs = [(qa[j]["question"], qa[j]["answer"]) for j in rng.choice(len(qa), size=1)]
        return _conv(pairs, 1), [clip.frames[i]], kind

    def _stream_window(self, scene_seed: int, rng: np.random.Generator) -> tuple[list[dict], list[np.ndarray], str]:
        scenario = self.stream_scenario(scene_seed, rng)
        stamps = self.window_stamps(scenario, rng)
        before: list[np.ndarray] = []
        # Drawn only when there is a choice, so recipes with one size keep their windows.
        size = self.render_sizes[int(rng.integers(len(self.render_sizes)))] if len(self.render_sizes) > 1 else \
            self.render_sizes[0]
        if self.cut_windows and len(stamps) > 1 and rng.random() < self.cut_windows:
            before, stamps = self._across_cut(scenario, len(stamps), scene_seed, rng, size)
        n = len(stamps)
        truth = scenario.truth(stamps)
        # One frame shows no change: its caption has no event sentence and its alerts are the states alone.
        caption = truth.caption if n > 1 else truth.static_caption
        alert = truth.alert_answer if n > 1 else tasks.alert_answer(
            [c for c in truth.categories if not tasks.CATEGORIES[c].temporal])
        pair = (tasks.DESCRIBE_PROMPT, caption) if rng.random() < 0.5 else (tasks.ALERT_PROMPT, alert)
        frames = before + [scenario.render(t, *size) for t in stamps]
        return _conv([pair], len(frames)), frames, "stream_window"

    def stream_scenario(self, scene_seed: int, rng: np.random.Generator) -> Any:
        """The 20-60 s scene of a stream window: its event as ``focus_events`` draws, else as the seed chooses."""
        from vila_ros.sim import make_scenario

        duration = float(rng.uniform(20.0, 60.0))
        family, category = None, "auto"
        if self.focus:  # drawn only when asked for, so recipes without it keep their windows
            chosen = int(np.searchsorted(np.cumsum([share for _, share in self.focus]), rng.random(), side="right"))
            family, category = self.focus[chosen][0] if chosen < len(self.focus) else (None, "auto")
        return make_scenario(scene_seed, family, category, duration=duration)

    def _across_cut(self, scenario: Any, n: int, scene_seed: int, rng: np.random.Generator,
                    size: tuple[int, int]) -> tuple[list[np.ndarray], list[float]]:
        """Frames of the end of another scene and the stamps of this scene's first frames: ``n`` in all, at least
        one of each."""
        from vila_ros.sim import make_scenario, split_of

        dt = 1.0 / self.clip_fps
        after = int(rng.integers(1, n))
        seed = scene_seed + CUT_SEED_OFFSET if split_of(scene_seed + CUT_SEED_OFFSET) == self.split else \
            scene_seed - CUT_SEED_OFFSET
        previous = make_scenario(seed, scenario.family, duration=float(rng.uniform(20.0, 60.0)))
        end = float(rng.uniform(previous.duration - dt, previous.duration))
        before = [previous.render(end - k * dt, *size) for k in range(n - after - 1, -1, -1)]
        return before, [k * dt for k in range(after)]

    def window_stamps(self, scenario: Any, rng: np.random.Generator) -> list[float]:
        """Frame times of a stream window of 1..num_frames frames (``full_windows`` of the time all of them) at
        ``clip_fps`` ending anywhere in the scenario (or, ``onset_windows`` of the time, within ``ONSET_SPAN`` of its
        event's onset)."""
        n, dt = int(rng.integers(1, self.num_frames + 1)), 1.0 / self.clip_fps
        # Drawn only when asked for, so recipes without full windows keep the windows they had.
        if self.full_windows and rng.random() < self.full_windows:
            n = self.num_frames
        end = float(rng.uniform((n - 1) * dt, scenario.duration))
        if self.onset_windows and scenario.event is not None and rng.random() < self.onset_windows:
            onset = scenario.event.start
            end = float(np.clip(rng.uniform(onset - ONSET_SPAN, onset + ONSET_SPAN), (n - 1) * dt, scenario.duration))
        return [end - (n - 1 - i) * dt for i in range(n)]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        conv, frames, _ = self.conversation(index)
        ids, labels = encode_conversation(conv, self.tokenizer, self.template, len(frames))
        ids, labels, kept = truncate(ids, labels, len(frames), self.tokens_per_image, self.max_length)
        pixels = self.image_processor(frames[:kept]) if kept else None
        return make_sample(ids, labels, pixels)


def _conv(pairs: Sequence[tuple[str, str]], num_images: int) -> list[dict]:
    prefix = (IMAGE_PLACEHOLDER + "\n") * num_images
    out = []
    for i, (q, a) in enumerate(pairs):
        out.append({"from": "human", "value": (prefix + q) if i == 0 else q})
        out.append({"from": "gpt", "value": a})
    return out
