"""`vila-ros bench quant` on the tiny model: both rows, the ratios, the JSON written."""
import json


def test_bench_quant_tiny(tiny_dir, int4_dir, tmp_path, capsys):
    from vila_ros.cli import main

    out = tmp_path / "bench.json"
    assert main(["bench", "quant", "--model", str(tiny_dir), "--json", str(out), "--group", "32",
                 "--new-tokens", "4", "--repeats", "1"]) == 0
    report = json.loads(out.read_text())
    assert report["int4_source"].startswith("RTN group 32")
    for row in ("bf16", "int4"):
        assert report[row]["decode_tok_s"] > 0 and report[row]["llm_weight_bytes"] > 0
    # tiny: the embeddings (384 x 64, twice) dominate its LLM, so int4 saves only part of it
    assert report["llm_weight_ratio"] < 0.8 and report["model_weight_ratio"] < 1.0
    out2 = tmp_path / "bench2.json"
    assert main(["bench", "quant", "--model", str(tiny_dir), "--int4", str(int4_dir), "--json", str(out2),
                 "--new-tokens", "3", "--repeats", "1"]) == 0
    assert json.loads(out2.read_text())["int4_source"].startswith("checkpoint")
