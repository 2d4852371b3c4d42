"""Quantization with real bitsandbytes on CPU (the evaluate stage runs in test_pipeline_dvc.py)."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from transformers import AutoTokenizer

from fsku.models.load import save_model
from fsku.quantize import QuantConfig, dir_bytes, quantize

from conftest import tiny_gemma


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


def test_nf4_is_scored_on_cpu_through_its_dequantized_weights(merged, tmp_path):
    """``load_for_inference`` on CPU swaps each Linear4bit for a dense layer holding exactly the
    dequantized nf4 weight: bitsandbytes' own logits to float rounding (its generic CPU kernel; the
    AVX512-BF16 one rounds the block scales to bf16 first)."""
    import bitsandbytes as bnb
    from transformers import AutoModelForCausalLM

    from fsku.models.load import dequantize_4bit_layers, load_for_inference

    quantize(merged, tmp_path / "a", QuantConfig(method="nf4", compute_dtype="float32"), [])
    ids = torch.tensor([list(range(100, 140))])
    reference = AutoModelForCausalLM.from_pretrained(str(tmp_path / "a"), device_map="cpu").eval()
    layers = {n: m for n, m in reference.named_modules() if isinstance(m, bnb.nn.Linear4bit)}
    assert layers
    model, _ = load_for_inference(tmp_path / "a")
    dense = dict(model.named_modules())
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    for name, layer in layers.items():
        want = bnb.functional.dequantize_4bit(layer.weight.data, layer.weight.quant_state).float()
        assert type(dense[name]) is torch.nn.Linear and torch.equal(dense[name].weight.float(), want), name
        layer.support_avx512bf16_for_cpu = False  # the generic kernel: the block scales as stored
    with torch.no_grad():
        ref = reference(input_ids=ids).logits[0].float()
        got = model(input_ids=ids).logits[0].float()
    assert torch.allclose(got, ref, atol=1e-4, rtol=1e-4), float((got - ref).abs().max())
    assert not torch.equal(got, torch.zeros_like(got))
    next(iter(layers.values())).weight.quant_state.packing_format_for_cpu = True  # as its bf16 kernel leaves it
    with pytest.raises(ValueError, match=r"layers\.\d+\.\w+\.\w+_proj: bitsandbytes repacked"):  # too late
        dequantize_4bit_layers(reference)


def test_none_copies(merged, tmp_path):
    quantize(merged, tmp_path / "none", QuantConfig(method="none"), [])
    assert (tmp_path / "none" / "model.safetensors").read_bytes() == (merged / "model.safetensors").read_bytes()


CALIBRATION = [f"전자금융거래법 제{i}조에 따라 금융회사는 이용자의 접근매체를 안전하게 관리해야 한다. 정답: {i % 4 + 1}"
               for i in range(12)]


def test_gptq_on_cpu_reloads_as_the_stages_do(merged, tmp_path, monkeypatch):
    """Real gptqmodel on CPU: the saved model reloads through transformers (as ``evaluate`` and
    ``predict`` load it) onto gptqmodel's kernels, stays close to the original, is the same bytes
    when quantized again, and leaves nothing in the working directory."""
    from fsku.models.adapter import is_quantized
    from fsku.models.load import load_for_inference

    monkeypatch.chdir(tmp_path)
    cfg = QuantConfig(method="gptq", gptq_group_size=32, calibration_samples=8)
    quantize(merged, tmp_path / "a", cfg, CALIBRATION)
    quantize(merged, tmp_path / "b", cfg, CALIBRATION)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]  # no logs/ left by gptqmodel
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert {"config.json", "model.safetensors", "quantize_config.json", "tokenizer.json"} <= set(files)
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    qc = json.loads((tmp_path / "a" / "config.json").read_text())["quantization_config"]
    assert (qc["quant_method"], qc["bits"], qc["group_size"]) == ("gptq", 4, 32)
    assert "time" not in (tmp_path / "a" / "quant_log.csv").read_text().splitlines()[0].split(",")
    assert is_quantized(tmp_path / "a")

    model, tokenizer = load_for_inference(tmp_path / "a")
    assert tokenizer.get_vocab() == AutoTokenizer.from_pretrained(str(merged)).get_vocab()
    kernels = {type(m).__module__.split(".")[0] for m in model.modules()}
    assert "gptqmodel" in kernels  # the decoder's linears are GPTQ kernels, not dense layers
    ids = list(range(100, 140))
    ref, _ = _logits(merged, ids)
    with torch.no_grad():
        got = model(input_ids=torch.tensor([ids])).logits[0].float()
    cos = torch.nn.functional.cosine_similarity(ref, got, dim=-1)
    assert float(cos.min()) > 0.9 and not torch.equal(ref, got)
    assert dir_bytes(tmp_path / "a") < dir_bytes(merged)


def test_gptq_bad_input_writes_nothing(merged, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="calibration text"):
        quantize(merged, tmp_path / "q", QuantConfig(method="gptq"), ["", "  "])
    assert not (tmp_path / "q").exists()
    monkeypatch.setitem(sys.modules, "gptqmodel", None)  # as on a machine without it
    with pytest.raises(ValueError, match="requirements-gptq.txt"):
        quantize(merged, tmp_path / "q", QuantConfig(method="gptq"), CALIBRATION)
    assert not (tmp_path / "q").exists()
