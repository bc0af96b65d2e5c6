"""Training forward: splicing image features into a padded batch of variable-length sequences."""
import numpy as np
import pytest
import torch

from vila_ros.model.prompt import IGNORE_INDEX, IMAGE_TOKEN_INDEX, build_prompt_ids


@pytest.fixture(scope="module")
def batch(tiny_model):
    tok = tiny_model.tokenizer
    rows = [build_prompt_ids("Describe.", 2, tok, "vicuna_v1") + tok("A red car.", add_special_tokens=False).input_ids,
            build_prompt_ids("Is the path blocked? Answer yes or no.", 1, tok, "vicuna_v1")]
    length = max(map(len, rows))
    ids = torch.full((2, length), tok.pad_token_id)
    mask = torch.zeros(2, length, dtype=torch.long)
    for b, r in enumerate(rows):
        ids[b, : len(r)] = torch.tensor(r)
        mask[b, : len(r)] = 1
    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 256, (56, 56, 3), dtype=np.uint8) for _ in range(3)]
    return rows, ids, mask, tiny_model.preprocess(frames)


def test_splice_positions_labels_and_mask(tiny_model, batch):
    rows, ids, mask, pixels = batch
    labels = ids.clone()
    labels[mask == 0] = IGNORE_INDEX
    with torch.no_grad():
        feats = tiny_model.encode_images(pixels)
        inputs = tiny_model.build_inputs(ids, mask, feats, labels)
    t = tiny_model.tokens_per_image
    emb = tiny_model.llm.get_input_embeddings()
    r0 = rows[0]
    first = r0.index(IMAGE_TOKEN_INDEX)
    e = inputs["inputs_embeds"]
    assert e.shape[1] == max(len(r) + r.count(IMAGE_TOKEN_INDEX) * (t - 1) for r in rows)  # pads squeezed out
    assert torch.equal(e[0, :first], emb(torch.tensor(r0[:first])).detach())
    assert torch.equal(e[0, first:first + t], feats[0])  # images consumed in order: row 0 gets 0 and 1
    assert torch.equal(e[0, first + t + 1:first + 2 * t + 1], feats[1])
    r1_first = rows[1].index(IMAGE_TOKEN_INDEX)
    assert torch.equal(e[1, r1_first:r1_first + t], feats[2])
    lab = inputs["labels"]
    assert (lab[0, first:first + t] == IGNORE_INDEX).all()
    assert lab[0, first + t] == r0[first + 1]  # text after the image keeps its label
    n1 = len(rows[1]) + t - 1
    assert inputs["attention_mask"][1, :n1].all() and not inputs["attention_mask"][1, n1:].any()
    assert (lab[1, n1:] == IGNORE_INDEX).all()


def test_batched_forward_equals_single_rows(tiny_model, batch):
    rows, ids, mask, pixels = batch
    with torch.no_grad():
        out = tiny_model(ids, mask, images=pixels, labels=ids.masked_fill(mask == 0, IGNORE_INDEX))
        assert torch.isfinite(out.loss)
        single = tiny_model(torch.tensor([rows[1]]), images=pixels[2:3]).logits[0]
    n1 = single.shape[0]
    assert torch.allclose(out.logits[1, :n1], single, atol=1e-4)


def test_image_count_mismatch_is_an_error(tiny_model, batch):
    rows, ids, mask, pixels = batch
    with pytest.raises(ValueError, match="3 image slots but 2"):
        tiny_model.build_inputs(ids, mask, pixels[:2])


def test_loss_backpropagates_to_every_part(tiny_dir):
    from vila_ros.model.checkpoint import load_vila

    model = load_vila(tiny_dir).train()
    tok = model.tokenizer
    ids = torch.tensor([build_prompt_ids("Describe.", 1, tok, "vicuna_v1") + [tok.eos_token_id]])
    px = model.preprocess([np.full((56, 56, 3), 90, np.uint8)])
    model(ids, images=px, labels=ids).loss.backward()
    for part in (model.vision_tower, model.mm_projector, model.llm):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())


def test_left_padding_gives_the_same_logits(tiny_model, batch):
    rows, ids, mask, pixels = batch
    left_ids = torch.full_like(ids, tiny_model.tokenizer.pad_token_id)
    left_mask = torch.zeros_like(mask)
    for b, r in enumerate(rows):
        left_ids[b, ids.shape[1] - len(r):] = torch.tensor(r)
        left_mask[b, ids.shape[1] - len(r):] = 1
    with torch.no_grad():
        right = tiny_model(ids, mask, images=pixels).logits
        left = tiny_model(left_ids, left_mask, images=pixels).logits
    assert torch.allclose(right, left, atol=1e-5)
