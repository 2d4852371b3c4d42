"""Quantization with real bitsandbytes on CPU, and the evaluate stage end to end on tiny models."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
import torch
import yaml

from conftest import ROOT, run, tiny_gemma
from fsku.models.load import save_model
from fsku.quantize import QuantConfig, dir_bytes, quantize


@pytest.fixture(scope="module")
def merged(tmp_path_factory, gemma_tokenizer):
    """Small vocabulary (the test feeds ids below it) so the test measures the decoder, not the embedding."""
    d = tmp_path_factory.mktemp("quant") / "merged"
    model = tiny_gemma(layers=2, seed=3, hidden=64, head_dim=32, vocab=4096)  # bitsandbytes blocks are 64 wide
    save_model(model, gemma_tokenizer, d)
    return d


def _logits(model_dir, ids):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), device_map="cpu").eval()
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0].float(), model


@pytest.mark.parametrize("method, layer", [("nf4", "Linear4bit"), ("int8", "Linear8bitLt")])
def test_bitsandbytes_quantization_on_cpu(merged, tmp_path, method, layer):
    """The saved model reloads as bitsandbytes layers, stays close to the original, and is
    byte-identical when quantized again."""
    cfg = QuantConfig(method=method)
    quantize(merged, tmp_path / "a", cfg, [])
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert "config.json" in files and "tokenizer.json" in files
    if method == "nf4":
        quantize(merged, tmp_path / "b", cfg, [])
        assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    assert "quantization_config" in json.loads((tmp_path / "a" / "config.json").read_text())
    ids = list(range(100, 140))
    ref, _ = _logits(merged, ids)
    got, model = _logits(tmp_path / "a", ids)
    assert any(type(m).__name__ == layer for m in model.modules())
    cos = torch.nn.functional.cosine_similarity(ref, got, dim=-1)
    assert float(cos.min()) > 0.9 and not torch.equal(ref, got)
    # the decoder's linear weights shrink; the (large, tied) embedding stays as it is
    assert dir_bytes(tmp_path / "a") < dir_bytes(merged)


def test_none_copies_and_gptq_needs_a_gpu(merged, tmp_path):
    quantize(merged, tmp_path / "none", QuantConfig(method="none"), [])
    assert (tmp_path / "none" / "model.safetensors").read_bytes() == (merged / "model.safetensors").read_bytes()
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="gptq"):
            quantize(merged, tmp_path / "gptq", QuantConfig(method="gptq"), ["calibration text"])
        assert not (tmp_path / "gptq").exists()


def test_evaluate_stage_scores_each_row(tmp_path, tiny_encoder, gemma_tokenizer):
    """`python -m stages.evaluate` on tiny models: every row scored with the FSKU metric, the plot
    data and per-question predictions written, predictions byte-identical on a rerun."""
    save_model(tiny_gemma(layers=2, seed=4), gemma_tokenizer, tmp_path / "models/student_init")
    for row in ("merged", "quantized"):
        shutil.copytree(tmp_path / "models/student_init", tmp_path / "models" / row)
    from fsku.questions import load_questions

    qs = load_questions(ROOT / "data/raw/questions/eval.csv")
    subset = [q for q in qs if q.is_mcq][:6] + [q for q in qs if not q.is_mcq][:3]
    import csv

    with open(tmp_path / "eval.csv", "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ID", "Domain", "Question", "Answer", "Keyword"])
        w.writerows([q.id, q.domain, q.text, q.answer, ",".join(q.keywords)] for q in subset)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({
        "eval": {"questions": "eval.csv", "max_tokens": 4, "similarity_model": str(tiny_encoder)},
        "gen": {"max_model_len": 512}, "prompts": {"top_k": 0}}))
    env = {"PYTHONPATH": str(ROOT)}
    run([sys.executable, "-m", "stages.evaluate", "--index", ""], cwd=tmp_path, env=env)
    first = (tmp_path / "data/eval/predictions.jsonl").read_bytes()
    m = json.loads((tmp_path / "metrics/eval.json").read_text())
    assert list(m["rows"]) == ["student", "distilled", "quantized"] and m["similarity_model"] == str(tiny_encoder)
    for row in m["rows"].values():
        assert row["mcq"] == 6 and row["open"] == 3 and 0 <= row["total"] <= 1
        assert row["total"] == pytest.approx(0.5 * row["mcq_accuracy"] + 0.5 * row["open_score"], abs=1e-3)
        assert set(row["by_domain"]) == {q.domain for q in subset}
        assert row["latency_p95_s"] >= row["latency_p50_s"] > 0
    assert m["rows"]["student"]["mcq_accuracy"] == m["rows"]["distilled"]["mcq_accuracy"]  # same weights
    plot = (tmp_path / "metrics/eval_scores.csv").read_text().splitlines()
    assert plot[0] == "model,mcq_accuracy,open_score,total,total_model_only" and len(plot) == 4
    preds = [json.loads(x) for x in first.decode().splitlines()]
    for name, row in m["rows"].items():
        mine = [p for p in preds if p["row"] == name]
        context = [p for p in mine if p["source"] == "context"]
        assert row["from_context"] == len(context)
        own = [0.0 if p["source"] == "context" else p["score"] for p in mine if p["type"] == "open"]
        assert row["model_only"]["open_score"] == pytest.approx(sum(own) / len(own), abs=1e-4)
        assert row["model_only"]["total"] <= row["total"]
    run([sys.executable, "-m", "stages.evaluate", "--index", "", "--rows", "student"], cwd=tmp_path, env=env)
    again = (tmp_path / "data/eval/predictions.jsonl").read_text().splitlines()
    assert again == [x for x in first.decode().splitlines() if '"row": "student"' in x]
