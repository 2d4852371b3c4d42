"""Quantizing the merged student, and measuring what it cost.

``nf4`` and ``int8`` go through bitsandbytes (which runs on CPU since 0.45), ``gptq`` through
gptqmodel (a GPU path; it needs calibration text, taken from the pairs' prompts and answers), and
``none`` copies the model. The measurement reloads the saved model, as every later stage does,
and compares it with the merged model on the test pairs' teacher answers.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from fsku.config import ConfigError, field
from fsku.io import atomic_dir, save_tokenizer

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class QuantConfig:
    method: Literal["nf4", "int8", "gptq", "none"] = "nf4"
    compute_dtype: Literal["float32", "bfloat16", "float16"] = field(
        "float32", doc="dtype of the matmuls (nf4) and of the weights left unquantized (embeddings, norms)")
    double_quant: bool = field(False, doc="nf4: quantize the quantization constants too")
    gptq_bits: int = field(4, ge=2, le=8)
    gptq_group_size: int = field(128, ge=-1, doc="-1 = one group per row")
    calibration_samples: int = field(128, ge=1, doc="gptq: calibration texts (pairs' prompts + answers)")
    eval_examples: int = field(0, ge=0, doc="test pairs measured for the perplexity change; 0 = all")
    latency_tokens: int = field(16, ge=1, le=512, doc="greedy tokens timed for the per-token latency")

    def validate(self) -> None:
        if self.gptq_bits not in (2, 3, 4, 8):
            raise ConfigError(f"gptq_bits: {self.gptq_bits} is not one of 2, 3, 4, 8")


def quantize(model_dir: str | Path, out_dir: str | Path, cfg: QuantConfig, calibration: list[str]) -> None:
    """Write the quantized model (weights, config with its quantization_config, tokenizer) atomically."""
    from transformers import AutoTokenizer

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if cfg.method == "gptq":
        _check_gptq()
    with atomic_dir(out_dir) as tmp:
        if cfg.method == "none":
            for p in sorted(model_dir.iterdir()):
                if p.is_file():
                    shutil.copyfile(p, tmp / p.name)
            return
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        if cfg.method == "gptq":
            _gptq(model_dir, tmp, cfg, calibration, tokenizer)
        else:
            _load_bnb(model_dir, cfg).save_pretrained(str(tmp))
        save_tokenizer(tokenizer, tmp)


def _load_bnb(model_dir: Path, cfg: QuantConfig):
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ValueError("quant.method: nf4/int8 need bitsandbytes (pip install bitsandbytes==0.50.2)") from None
    dtype = DTYPES[cfg.compute_dtype]
    if cfg.method == "nf4":
        q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype,
                               bnb_4bit_use_double_quant=cfg.double_quant)
    else:
        q = BitsAndBytesConfig(load_in_8bit=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return AutoModelForCausalLM.from_pretrained(str(model_dir), quantization_config=q, dtype=dtype, device_map=device)


def _check_gptq() -> None:
    try:
        import gptqmodel  # noqa: F401
    except ImportError:
        raise ValueError("quant.method: gptq needs gptqmodel (pip install gptqmodel; a CUDA machine)") from None
    if not torch.cuda.is_available():
        raise ValueError("quant.method: gptq runs on a CUDA GPU; use nf4 or int8 on CPU")


def _gptq(model_dir: Path, out: Path, cfg: QuantConfig, calibration: list[str], tokenizer) -> None:
    from gptqmodel import GPTQModel, QuantizeConfig

    model = GPTQModel.load(str(model_dir), QuantizeConfig(bits=cfg.gptq_bits, group_size=cfg.gptq_group_size))
    model.quantize(calibration[: cfg.calibration_samples], tokenizer=tokenizer)
    model.save(str(out))


def dir_bytes(path: str | Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


@torch.no_grad()
def token_latency(model, tokenizer, prompt: str, tokens: int) -> float:
    """Seconds per generated token: a greedy decode of ``tokens`` tokens (no early stop), after one
    untimed warm-up call."""
    x = tokenizer(prompt, return_tensors="pt").to(model.device)
    kwargs = dict(max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, temperature=None, top_p=None,
                  top_k=None, pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    model.generate(**x, **{**kwargs, "max_new_tokens": 2, "min_new_tokens": 2})
    t = time.perf_counter()
    model.generate(**x, **kwargs)
    return (time.perf_counter() - t) / tokens
