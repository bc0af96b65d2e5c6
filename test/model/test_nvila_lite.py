"""NVILA-Lite in the original (non -hf) layout: a tiny checkpoint written here with transformers' own
save_pretrained (Qwen2 LLM, SigLIP tower) and a hand-made 3x3 _fix projector; its prompts, projector, tiling and
greedy answers are each held to an independent computation from the same files."""
import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn

from vila_ros.engine.torch_engine import TorchEngine
from vila_ros.engine.types import GenerationConfig
from vila_ros.model.checkpoint import UnsupportedCheckpointError, load_vila
from vila_ros.model.projector import DownSampleKxK, MultimodalProjector
from vila_ros.model.prompt import IMAGE_TOKEN_INDEX, build_prompt_ids
from vila_ros.model.tiling import tile_image
from vila_ros.model.tokenizer import build_chatml_tokenizer

SIZE, PATCH, VISION_HIDDEN, HIDDEN = 70, 14, 32, 64  # 5x5 patches: the 3x3 merge pads them to 6x6 -> 4 tokens
MAX_TILES = 4
# Qwen2's standard chat template, as its tokenizer_config.json has it (the test's own jinja, not ours).
QWEN2_JINJA = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
CORPUS = ["A robot in a warehouse aisle. Is the path clear? Yes. No. A person crosses the road."] * 30


def reference_projector(mm: int, hidden: int) -> nn.Sequential:
    """NVILA's documented mlp_downsample_3x3_fix stack after the merge (slot 0 is the merge, no parameters)."""
    return nn.Sequential(nn.Identity(), nn.LayerNorm(9 * mm), nn.Linear(9 * mm, 3 * mm), nn.GELU(),
                         nn.LayerNorm(3 * mm), nn.Linear(3 * mm, hidden), nn.GELU(), nn.Linear(hidden, hidden))


def reference_merge(x: torch.Tensor, k: int) -> torch.Tensor:
    """k x k merge by explicit loops: blocks row-major, a block's patches row by row, zeros outside the grid."""
    b, n, c = x.shape
    h = int(round(n ** 0.5))
    grid = x.reshape(b, h, h, c)
    blocks = -(-h // k)
    out = torch.zeros(b, blocks * blocks, k * k * c)
    for bi in range(blocks):
        for bj in range(blocks):
            parts = []
            for dr in range(k):
                for dc in range(k):
                    r, col = bi * k + dr, bj * k + dc
                    parts.append(grid[:, r, col] if r < h and col < h else torch.zeros(b, c))
            out[:, bi * blocks + bj] = torch.cat(parts, dim=-1)
    return out


def write_checkpoint(root, chat_template=None, seed=0):
    from transformers import Qwen2Config, Qwen2ForCausalLM, SiglipVisionConfig, SiglipVisionModel

    torch.manual_seed(seed)
    tok = build_chatml_tokenizer(CORPUS, 320, model_max_length=1024)
    tok.chat_template = QWEN2_JINJA
    llm_cfg = Qwen2Config(vocab_size=len(tok), hidden_size=HIDDEN, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                          tie_word_embeddings=True, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                          bos_token_id=None, rms_norm_eps=1e-6)
    llm = Qwen2ForCausalLM(llm_cfg)
    tower = SiglipVisionModel(SiglipVisionConfig(hidden_size=VISION_HIDDEN, intermediate_size=64, num_hidden_layers=2,
                                                 num_attention_heads=2, image_size=SIZE, patch_size=PATCH))
    projector = reference_projector(VISION_HIDDEN, HIDDEN)
    with torch.no_grad():  # large random weights: greedy answers vary from token to token
        for module in (llm, tower, projector):
            for name, p in module.named_parameters():
                if p.dim() > 1:
                    p.normal_(0, 0.3)
                elif name.endswith("bias"):
                    p.normal_(0, 0.02)
    llm.save_pretrained(root / "llm")
    tok.save_pretrained(root / "llm")
    tower.save_pretrained(root / "vision_tower")
    (root / "vision_tower" / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "SiglipImageProcessor", "size": {"height": SIZE, "width": SIZE}, "resample": 3,
        "image_mean": [0.5] * 3, "image_std": [0.5] * 3, "rescale_factor": 1 / 255, "do_resize": True,
        "do_rescale": True, "do_normalize": True}))
    (root / "mm_projector").mkdir()
    save_file({f"layers.{k}": v.contiguous() for k, v in projector.state_dict().items()},
              str(root / "mm_projector" / "model.safetensors"))
    proj_cfg = {"mm_projector_type": "mlp_downsample_3x3_fix", "model_type": "v2l_projector"}
    (root / "mm_projector" / "config.json").write_text(json.dumps(proj_cfg))
    part = lambda d: {**json.loads((root / d / "config.json").read_text()), "_name_or_path": f"./{d}"}  # noqa: E731
    (root / "config.json").write_text(json.dumps({
        "architectures": ["LlavaLlamaModel"], "model_type": "llava_llama", "llm_cfg": part("llm"),
        "vision_tower_cfg": part("vision_tower"), "mm_projector_cfg": {**proj_cfg, "_name_or_path": "./mm_projector"},
        "hidden_size": HIDDEN, "mm_hidden_size": VISION_HIDDEN, "image_aspect_ratio": "dynamic", "min_tiles": 1,
        "max_tiles": MAX_TILES, "dynamic_s2": False, "s2": False, "chat_template": chat_template,
        "image_encoder": '{"_target_": "llava.model.encoders.BasicImageEncoder"}', "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "cls_patch", "model_dtype": "torch.float32", "num_video_frames": 8,
        "mm_use_im_start_end": False, "mm_use_im_patch_token": False}))
    return root


@pytest.fixture(scope="module")
def nvila_dir(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("nvila") / "NVILA-Lite-tiny")


@pytest.fixture(scope="module")
def nvila_model(nvila_dir):
    return load_vila(nvila_dir)


def test_loads_the_original_layout(nvila_model):
    from transformers import Qwen2ForCausalLM

    assert type(nvila_model.llm) is Qwen2ForCausalLM and nvila_model.conv_template == "qwen2"
    assert nvila_model.config.tokens_per_image == 4 and nvila_model.tokens_per_image == 5  # + the "\n" embedding
    assert nvila_model.llm.lm_head.weight.data_ptr() == nvila_model.llm.model.embed_tokens.weight.data_ptr()
    assert nvila_model.mm_projector.projector_type == "mlp_downsample_3x3_fix"


def test_image_end_ids_follow_the_tokenizer_they_come_from(nvila_dir):
    model = load_vila(nvila_dir)
    newline = model.tokenizer("\n").input_ids
    assert model.image_end_ids == newline and model.image_end_ids == newline  # computed once, then kept

    class Shifted:  # a swapped tokenizer gives its own ids, not the kept ones
        def __call__(self, text):
            return type("Encoded", (), {"input_ids": [i + 1 for i in newline]})()

    original, model.tokenizer = model.tokenizer, Shifted()
    assert model.image_end_ids == [i + 1 for i in newline]
    model.tokenizer = original
    assert model.image_end_ids == newline


def test_named_chat_template_is_nvilas_own(nvila_dir, tmp_path):
    root = write_checkpoint(tmp_path / "named", chat_template="qwen2")
    assert load_vila(root).conv_template == "nvila_qwen2"


@pytest.mark.parametrize("where", ["tokenizer_config.json", "chat_template.jinja"])
def test_the_tokenizers_own_chat_template_decides(nvila_dir, tmp_path, where):
    import shutil

    root = tmp_path / "ckpt"
    shutil.copytree(nvila_dir, root)
    llm = root / "llm"
    (llm / "chat_template.jinja").unlink(missing_ok=True)
    no_full_stop = QWEN2_JINJA.replace("assistant.<", "assistant<")
    if where == "chat_template.jinja":
        (llm / where).write_text(no_full_stop)
    else:
        data = json.loads((llm / where).read_text())
        (llm / where).write_text(json.dumps({**data, "chat_template": no_full_stop}))
    assert load_vila(root).conv_template == "nvila_qwen2"


def reference_prompt_ids(tok, content, system_period=True):
    """NVILA's tokenization: the chat template over the whole text, "<image>" one added token, -200 in its place."""
    text = tok.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False)
    if not system_period:
        text = text.replace("You are a helpful assistant.", "You are a helpful assistant", 1)
    image_id = tok.convert_tokens_to_ids("<image>")
    return [IMAGE_TOKEN_INDEX if i == image_id else i for i in tok(text).input_ids]


@pytest.mark.parametrize("images, content", [(0, "Is the path clear?"), (2, "<image><image>Is the path clear?"),
                                             (1, "<image>A robot in a warehouse aisle."),
                                             (2, "<image><image> Is it clear? \n")])
def test_prompt_ids_equal_the_qwen2_chat_template(nvila_model, images, content):
    tok = nvila_model.tokenizer
    question = content.replace("<image>", "")
    content = content.strip()  # NVILA strips each message before templating
    assert build_prompt_ids(question, images, tok, "qwen2") == reference_prompt_ids(tok, content)
    assert build_prompt_ids(question, images, tok, "nvila_qwen2") == reference_prompt_ids(tok, content, False)
    tiled = "<image>\n" * 3 + question  # a tiled image: the question places its own placeholders
    assert build_prompt_ids(tiled, 3, tok, "qwen2") == reference_prompt_ids(tok, tiled.strip())


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("side", [4, 5, 7, 9])
def test_fix_merge_matches_loops(k, side):
    x = torch.randn(2, side * side, 3)
    assert torch.equal(DownSampleKxK(k)(x), reference_merge(x, k))


@pytest.mark.parametrize("kind, k", [("mlp_downsample_2x2_fix", 2), ("mlp_downsample_3x3_fix", 3)])
def test_fix_projector_matches_an_independent_stack(kind, k):
    torch.manual_seed(1)
    ours = MultimodalProjector(kind, 8, 16)
    x = torch.randn(2, 7 * 7, 8)  # odd grid: padded on the bottom and the right
    merged = reference_merge(x, k)
    if k == 3:
        ref = reference_projector(8, 16)
    else:
        ref = nn.Sequential(nn.Identity(), nn.LayerNorm(32), nn.Linear(32, 16), nn.GELU(), nn.Linear(16, 16))
    # same keys as NVILA's files: layers.1, 2, 4 (, 5, 7)
    ref.load_state_dict({k.removeprefix("layers."): v for k, v in ours.state_dict().items()})
    with torch.no_grad():
        assert torch.allclose(ours(x), ref[1:](merged), atol=1e-6)
    assert ours(x).shape == (2, (-(-7 // k)) ** 2, 16)


def reference_grid(w, h, tile, lo, hi):
    """The documented choice: the closest aspect ratio; among equally close grids (by tile count) the last one the
    image covers more than half of, else the first."""
    grids = [(c, r) for n in range(lo, hi + 1) for c in range(1, n + 1) for r in range(1, n + 1) if c * r == n]
    best = min(abs(w / h - c / r) for c, r in grids)
    ties = [g for g in grids if abs(w / h - g[0] / g[1]) == best]
    chosen = ties[0]
    for c, r in ties[1:]:
        if w * h > 0.5 * tile * tile * c * r:
            chosen = (c, r)
    return chosen


def reference_tiles(frame, tile, lo, hi):
    image = Image.fromarray(frame)
    cols, rows = reference_grid(image.width, image.height, tile, lo, hi)
    big = np.asarray(image.resize((cols * tile, rows * tile), Image.BICUBIC))
    tiles = [big[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile] for r in range(rows) for c in range(cols)]
    return tiles + ([np.asarray(image.resize((tile, tile), Image.BICUBIC))] if len(tiles) > 1 else [])


@pytest.mark.parametrize("w, h", [(640, 480), (480, 640), (1920, 1080), (300, 290), (1000, 200), (50, 40),
                                  (2000, 2000), (448, 1344)])
@pytest.mark.parametrize("lo, hi", [(1, 12), (1, 4), (2, 6)])
def test_tiling_matches_the_documented_algorithm(w, h, lo, hi):
    frame = np.random.default_rng(w * h).integers(0, 256, (h, w, 3), dtype=np.uint8)
    ours, ref = tile_image(frame, 56, lo, hi), reference_tiles(frame, 56, lo, hi)
    assert len(ours) == len(ref) and all(np.array_equal(a, b) for a, b in zip(ours, ref))


def reference_greedy(root, tok, content, images, n):
    """Greedy ids from the checkpoint's files, read by transformers and safetensors alone: HF SiglipVisionModel
    hidden_states[-2], the reference 3x3 _fix stack, the "\\n" embedding after each image, HF Qwen2ForCausalLM
    over the whole sequence at every step (no cache)."""
    from transformers import Qwen2ForCausalLM, SiglipVisionModel

    llm = Qwen2ForCausalLM.from_pretrained(root / "llm", local_files_only=True, dtype=torch.float32).eval()
    tower = SiglipVisionModel.from_pretrained(root / "vision_tower", local_files_only=True,
                                              dtype=torch.float32).eval()
    proj = reference_projector(VISION_HIDDEN, HIDDEN)
    stored = load_file(str(root / "mm_projector" / "model.safetensors"))
    proj.load_state_dict({k.removeprefix("layers."): v for k, v in stored.items()})
    emb = llm.get_input_embeddings()
    with torch.no_grad():
        px = torch.stack([torch.from_numpy(np.array(Image.fromarray(f).resize((SIZE, SIZE), Image.BICUBIC)))
                          for f in images]).permute(0, 3, 1, 2).float() / 255
        hidden = tower((px - 0.5) / 0.5, output_hidden_states=True).hidden_states[-2]
        feats = proj[1:](reference_merge(hidden, 3))
        newline = emb(torch.tensor(tok("\n").input_ids))
        parts, k = [], 0
        for i in reference_prompt_ids(tok, content):
            if i == IMAGE_TOKEN_INDEX:
                parts += [feats[k], newline]
                k += 1
            else:
                parts.append(emb(torch.tensor([i])))
        x = torch.cat(parts)[None]
        out = []
        for _ in range(n):
            nxt = int(llm(inputs_embeds=x).logits[0, -1].argmax())
            out.append(nxt)
            if nxt == tok.eos_token_id:
                break
            x = torch.cat([x, emb(torch.tensor([[nxt]]))], dim=1)
    return out


def test_greedy_ids_equal_an_independent_computation(nvila_dir, nvila_model):
    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 256, (48, 96, 3), dtype=np.uint8), rng.integers(0, 256, (90, 60, 3), dtype=np.uint8)]
    engine = TorchEngine(nvila_model)
    ref = reference_greedy(nvila_dir, nvila_model.tokenizer, "<image><image>Is the path clear?", frames, 12)
    assert len(set(ref)) > 2  # a constant answer would hide a wrong splice
    got = engine.generate("Is the path clear?", engine.encode_frames(frames),
                          GenerationConfig(max_new_tokens=12, use_prefix_cache=False))
    assert got.token_ids == ref


def test_one_frame_is_tiled_like_nvila(nvila_dir, nvila_model):
    frame = np.random.default_rng(4).integers(0, 256, (60, 200, 3), dtype=np.uint8)
    tiles = reference_tiles(frame, SIZE, 1, MAX_TILES)
    assert len(tiles) > 2  # several tiles and the thumbnail
    ref = reference_greedy(nvila_dir, nvila_model.tokenizer, "<image>\n" * len(tiles) + "Describe.", tiles, 10)
    engine = TorchEngine(nvila_model)
    got = engine.generate("Describe.", [frame], GenerationConfig(max_new_tokens=10))
    assert got.token_ids == ref
    batch = engine.generate_batch(["Describe.", "Describe."], [[frame], engine.encode_frames([frame])],
                                  GenerationConfig(max_new_tokens=10))
    assert batch[0].token_ids == ref  # a batch row tiles its one raw frame as generate() does
    untiled = engine.generate("Describe.", engine.encode_frames([frame]), GenerationConfig(max_new_tokens=10))
    assert batch[1].token_ids == untiled.token_ids


@pytest.mark.parametrize("change, words", [
    (lambda c: c.update(dynamic_s2=True, image_aspect_ratio="dynamic_s2"), ["dynamic S2", "'dynamic_s2'"]),
    (lambda c: c["mm_projector_cfg"].update(mm_projector_type="mlp_downsample_3x3_s2"),
     ["mlp_downsample_3x3_s2", "mm_projector_type"]),
    (lambda c: c.update(image_encoder='{"_target_": "llava.model.encoders.SomeOtherEncoder"}'),
     ["SomeOtherEncoder", "'image_encoder'"]),
    (lambda c: c["llm_cfg"].update(model_type="gemma2"), ["gemma2", "llm_cfg.model_type"]),
])
def test_what_remains_unsupported_is_refused_by_key(nvila_dir, refusal_of, change, words):
    message = refusal_of(nvila_dir, change)
    assert all(word in message for word in words), message


def test_an_unknown_tokenizer_chat_template_is_refused(nvila_dir, tmp_path):
    import shutil

    root = tmp_path / "ckpt"
    shutil.copytree(nvila_dir, root)
    path = root / "llm" / "tokenizer_config.json"
    data = json.loads(path.read_text())
    (root / "llm" / "chat_template.jinja").unlink(missing_ok=True)
    path.write_text(json.dumps({**data, "chat_template": "{{ messages[0]['content'] }} ANSWER:"}))
    with pytest.raises(UnsupportedCheckpointError, match="tokenizer_config.json.*ANSWER"):
        load_vila(root)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_qwen2_decoder_logits_match_transformers(nvila_model, kernel, dtype):
    """Our KV-cache forward over the Qwen2 weights (biased q/k/v) against HF's full-sequence forward, at every
    position after a prefix, on aten's and on our kernels' one-token paths."""
    import copy

    from vila_ros.engine.decoder import LlamaDecoder

    ids = torch.tensor([[5, 77, 200, 12, 9, 41, 3, 150, 60, 7, 88, 19]])
    llm = copy.deepcopy(nvila_model.llm).to(dtype)
    with torch.no_grad():
        ref = llm(input_ids=ids).logits[0].float()
    dec = LlamaDecoder(llm)
    x = dec.embed(ids)
    cache = dec.new_cache(1, ids.shape[1])
    split = 5
    got = [dec.logits(dec.forward(x[:, :split], cache))[0]]
    for i in range(split, ids.shape[1]):
        got.append(dec.logits(dec.forward(x[:, i:i + 1], cache))[0])
    got = torch.cat(got)
    tolerance = 1e-4 if dtype == torch.float32 else 0.05 * float(ref.abs().max())
    assert torch.allclose(got, ref, atol=tolerance), (got - ref).abs().max()
