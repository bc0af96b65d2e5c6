"""A byte-level BPE tokenizer trained offline (no hub), wrapped as a transformers fast tokenizer.

Byte-level so any UTF-8 text round-trips (camera-scene prompts, odd punctuation); BOS added by the post-processor
so ``tokenizer(text).input_ids`` starts with BOS like Llama's tokenizer, which VILA's chunked tokenization expects.
"""
from __future__ import annotations

import itertools
from typing import Iterable, Sequence

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>")  # ids 0..3, Llama's order for the first three
UNK, BOS, EOS, PAD = SPECIAL_TOKENS


def train_bpe(corpus: Iterable[str], vocab_size: int) -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    return tok


def wrap(tok: Tokenizer, model_max_length: int = 4096):
    """tokenizers.Tokenizer -> transformers PreTrainedTokenizerFast with our special tokens."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        pad_token=PAD,
        model_max_length=model_max_length,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )


CHATML_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>")


def build_chatml_tokenizer(corpus: Sequence[str] | None, vocab_size: int, model_max_length: int = 4096):
    """A Qwen2-shaped tokenizer: byte-level BPE, no BOS, ChatML specials, "<image>" one special token (NVILA adds it
    to its tokenizer), EOS "<|im_end|>" and pad "<|endoftext|>" as Qwen2 instruct models have them."""
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(CHATML_SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus if corpus is not None else builtin_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<image>"], model_max_length=model_max_length,
        padding_side="right", clean_up_tokenization_spaces=False,
    )


def build_tokenizer(corpus: Sequence[str] | None, vocab_size: int, model_max_length: int = 4096):
    return wrap(train_bpe(corpus if corpus is not None else builtin_corpus(), vocab_size), model_max_length)


# A small built-in corpus: the kind of text the embedded model reads and writes (scene captions, questions,
# yes/no answers, corner-case words, the prompt templates), generated combinatorially so BPE finds enough merges.
_COLOURS = "red green blue yellow white black grey orange purple brown pink silver dark bright".split()
_OBJECTS = (
    "car truck bus bicycle motorcycle pedestrian person child dog cat ball box pallet forklift robot cone barrier "
    "door wall shelf table chair light sign tree road sidewalk crosswalk corridor floor ceiling window stairs "
    "ladder cart crate cable puddle fire smoke vehicle worker helmet vest obstacle animal bag bottle"
).split()
_ACTIONS = (
    "is crossing the road|is standing still|is moving left|is moving right|is approaching the camera|"
    "is lying on the floor|is blocking the path|is parked near the wall|has fallen over|is turning around|"
    "is waiting at the crossing|appears suddenly|is leaving the scene|is carrying a box|is running"
).split("|")
_PLACES = (
    "in a warehouse|on a street|in a parking lot|in an office corridor|at a loading dock|in a factory hall|"
    "on a sidewalk|at night|in the rain|under bright light|in fog|near the entrance"
).split("|")
_QUESTIONS = (
    "Describe the scene.|What is happening in this video?|Is there a person in the image? Answer yes or no.|"
    "Is the path blocked?|List the objects you see.|Is anything unusual happening?|How many people are there?|"
    "What color is the car?|Is there a hazard ahead of the robot?|Summarize the last frames.|"
    "Which corner cases are present?|Is it safe to continue?"
).split("|")
_ANSWERS = "Yes.|No.|Yes, there is.|No, the path is clear.|None.|I am not sure.".split("|")
# Everyday English for captions and answers (a vocabulary of ~2k needs a few hundred distinct words).
_WORDS = """
about above across after again against ahead almost alone along already also always among another answer any
anyone anything area around arrive aside away back background backward basket beside between beyond big blocked
board body bottom branch bridge broken building busy cabinet camera carefully carrying center chain change clear
close closed cloud cluttered collision color column come coming construction container corner counter cover crane
crowd curb current damaged danger dangerous daylight debris deep detect detected direction distance distant dock
doorway down drive driver driving dropped dust during each early edge elevator empty enter entering equipment
evening event every exit facing fallen far fast fence few field figure fixed flat flood following foreground
forward frame front full gate glass going good ground group guard half hall hand hanging hazard head heavy high
highway hole horizontal human inside intersection item jacket large last late leaning left level lift lifting
line loaded loading long looking loose low machine main many marking metal middle mirror missing motion moving
narrow near nearby next night noise nothing number object occluded office open opposite outdoor outside overhead
package paint panel parked part passing path pathway pavement people perhaps pillar pipe place plastic platform
pole position possible post present pulling pushing quickly rack rail ramp rear reflection region remain rolling
roof room rope rough row running safe safety scene screen second section seen several shadow shape sharp short
side signal single sitting slippery slow slowly small snow some someone something speed spill spilled square
stack stacked standing start static station still stop stopped storage straight strange sudden sunlight surface
tall tape third through tilted together top toward track traffic trailer tunnel turn under unknown unusual upper
vertical view visible walking warning water wet wheel while wide window wooden yard zone zero one two three four
five six seven eight nine ten eleven twelve first second third left right center north south east west morning
afternoon cloudy sunny rainy foggy snowy indoor outdoor clip video image frame frames camera robot sensor alert
severity low medium high critical collision intrusion blocked spill fire smoke fall person vehicle animal
""".split()


def builtin_corpus() -> list[str]:
    from vila_ros.model.templates import TEMPLATES

    lines: list[str] = []
    for colour, obj, action, place in itertools.product(_COLOURS, _OBJECTS, _ACTIONS[:5], _PLACES[:4]):
        lines.append(f"A {colour} {obj} {action} {place}.")
    for obj, action, place in itertools.product(_OBJECTS, _ACTIONS, _PLACES):
        lines.append(f"The {obj} {action} {place}. ")
    for q, a in itertools.product(_QUESTIONS, _ANSWERS):
        lines.append(f"{q} {a}")
    for t in TEMPLATES.values():
        lines.append(t.build_prompt("Describe the scene.", 1) + "A robot in a corridor." + t.answer_suffix)
    for i in range(0, len(_WORDS) - 6, 3):
        lines.append(" ".join(_WORDS[i:i + 7]).capitalize() + ".")
    for word in _WORDS:
        lines.append(f"There is a {word} {_OBJECTS[len(word) % len(_OBJECTS)]} {_PLACES[len(word) % len(_PLACES)]}.")
    for n in range(200):
        lines.append(f"{n} {n + 1} {n * 7 % 100} frames, {n % 24}:{n % 60:02d}, {n / 10:.1f} m")
    return lines
