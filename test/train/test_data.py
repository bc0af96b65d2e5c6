import json

import torch

from vila_ros import tasks
from vila_ros.model.checkpoint import load_vila
from vila_ros.model.prompt import IGNORE_INDEX, IMAGE_TOKEN_INDEX, tokenize_with_images
from vila_ros.model.templates import get_template
from vila_ros.train import batching as B
from vila_ros.train import data as D


def _strip(ids, tok):
    return ids[1:] if ids and ids[0] == tok.bos_token_id else ids


def test_label_masking_exact(tiny_ckpt):
    model = load_vila(tiny_ckpt)
    tok = model.tokenizer
    conv = [{"from": "human", "value": "<image>\nIs it night?"}, {"from": "gpt", "value": "yes"},
            {"from": "human", "value": "How many cars are there?"}, {"from": "gpt", "value": "two"}]
    ids, labels = D.encode_conversation(conv, tok, "vicuna_v1", 1)
    tpl = get_template("vicuna_v1")
    prompt = tokenize_with_images(tpl.build_prompt("<image>\nIs it night?", 1), tok)  # what the engine feeds
    a1 = _strip(list(tok(" yes</s>").input_ids), tok)
    ctx2 = _strip(list(tok("USER: How many cars are there? ASSISTANT:").input_ids), tok)
    a2 = _strip(list(tok(" two</s>").input_ids), tok)
    assert ids == prompt + a1 + ctx2 + a2
    assert labels == [IGNORE_INDEX] * len(prompt) + a1 + [IGNORE_INDEX] * len(ctx2) + a2
    assert ids.count(IMAGE_TOKEN_INDEX) == 1 and labels[ids.index(IMAGE_TOKEN_INDEX)] == IGNORE_INDEX
    assert tok.decode([t for t in labels if t >= 0]) == " yes</s> two</s>"


def test_plain_template_is_image_then_caption(tiny_ckpt):
    tok = load_vila(tiny_ckpt).tokenizer
    conv = [{"from": "human", "value": "<image>\n<image>\nDescribe the scene."}, {"from": "gpt", "value": "A road."}]
    ids, labels = D.encode_conversation(conv, tok, "plain", 2)
    assert ids[:3] == [tok.bos_token_id, IMAGE_TOKEN_INDEX, IMAGE_TOKEN_INDEX]
    assert tok.decode([t for t in labels if t >= 0]) == "A road.\n"
    assert all(t == IGNORE_INDEX for t in labels[:3])


def test_llava_dataset_and_collate(tiny_ckpt, llava_json):
    model = load_vila(tiny_ckpt)
    records = json.loads(llava_json.read_text())
    ds = D.LlavaDataset(llava_json, model.tokenizer, model.image_processor, model.conv_template,
                        tokens_per_image=model.tokens_per_image)
    samples = [ds[i] for i in range(len(ds))]
    for rec, s in zip(records, samples):
        n = 0 if "image" not in rec else (1 if isinstance(rec["image"], str) else len(rec["image"]))
        assert int((s["input_ids"] == IMAGE_TOKEN_INDEX).sum()) == n == s["pixels"].shape[0]
        sup = model.tokenizer.decode([t for t in s["labels"].tolist() if t >= 0])
        for turn in rec["conversations"]:
            if turn["from"] == "gpt":
                assert turn["value"] in sup
        assert "USER" not in sup
    assert any("image" not in r for r in records) or True
    batch = B.collate(samples[:4], model.tokenizer.pad_token_id)
    lengths = [s["input_ids"].numel() for s in samples[:4]]
    assert batch["input_ids"].shape == (4, max(lengths))
    for i, n in enumerate(lengths):  # right padding
        assert batch["attention_mask"][i, :n].all() and not batch["attention_mask"][i, n:].any()
        assert (batch["labels"][i, n:] == IGNORE_INDEX).all()
    n_img = sum(s["pixels"].shape[0] for s in samples[:4])
    assert (batch["images"] is None and n_img == 0) or batch["images"].shape[0] == n_img
    with torch.no_grad():
        out = model(**{k: batch[k] for k in ("input_ids", "attention_mask", "images", "labels")})
    assert torch.isfinite(out.loss)


def test_sim_dataset_kinds(tiny_ckpt):
    model = load_vila(tiny_ckpt)
    ds = D.SimDataset(model.tokenizer, model.image_processor, model.conv_template, model.config.image_size,
                      num_frames=4, tokens_per_image=model.tokens_per_image)
    seen = {}
    for i in range(60):
        conv, frames, kind = ds.conversation(i)
        seen.setdefault(kind, (conv, frames))
    assert set(seen) == set(D.DEFAULT_SIM_MIX) == set(D.SIM_KINDS)
    assert seen["video_alert"][0][0]["value"].endswith(tasks.ALERT_PROMPT) and len(seen["video_alert"][1]) == 4
    assert seen["video_caption"][0][0]["value"].endswith(tasks.DESCRIBE_PROMPT)
    assert len(seen["frame"][1]) == 1 and not seen["text"][1]
    s = ds[next(i for i in range(60) if ds.conversation(i)[1])]  # a sample with frames
    assert s["pixels"].shape[1:] == (3, 56, 56)
    assert ds.conversation(5)[0] == ds.conversation(5)[0]  # deterministic in the index
    only = D.SimDataset(model.tokenizer, model.image_processor, "plain", 56, 4, mix={"video_caption": 1.0})
    assert {only.conversation(i)[2] for i in range(5)} == {"video_caption"}
