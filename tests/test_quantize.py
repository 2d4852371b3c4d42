"""Quantization with real bitsandbytes on CPU (the evaluate stage runs in test_pipeline_dvc.py)."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import tiny_gemma
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
