"""Quantizing the merged student, and measuring what it cost.

``nf4`` and ``int8`` go through bitsandbytes (which runs on CPU since 0.45), ``gptq`` through
gptqmodel (CPU or CUDA; it needs calibration text, taken from the pairs' prompts and answers), and
``none`` copies the model. The measurement reloads the saved model, as every later stage does,
and compares it with the merged model on the test pairs' teacher answers.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from fsku.config import ConfigError, field
from fsku.io import atomic_dir, save_tokenizer
from fsku.kernels import compute_dtype
from fsku.models.load import DTYPES

log = logging.getLogger(__name__)



@dataclass
class QuantConfig:
    method: Literal["nf4", "int8", "gptq", "none"] = "nf4"
    compute_dtype: Literal["auto", "float32", "bfloat16", "float16"] = field(
        "auto", doc="dtype of the matmuls (nf4) and of the weights left unquantized (embeddings, norms); auto: "
                    "bfloat16 on a GPU or a CPU with AMX/AVX512-BF16, else float32 (fsku.kernels.compute_dtype)")
    double_quant: bool = field(False, doc="nf4: quantize the quantization constants too")
    gptq_bits: int = field(4, ge=2, le=8)
    gptq_group_size: int = field(128, ge=-1, doc="-1 = one group per row")
    calibration_samples: int = field(128, ge=1, doc="gptq: calibration texts (pairs' prompts + answers)")
    calibration_batch_size: int = field(4, ge=1, doc="gptq: calibration texts a forward pass")
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
        _check_gptq(calibration)
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
    dtype = DTYPES[compute_dtype(cfg.compute_dtype, torch.cuda.is_available())]
    if cfg.method == "nf4":
        q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype,
                               bnb_4bit_use_double_quant=cfg.double_quant)
    else:
        q = BitsAndBytesConfig(load_in_8bit=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return AutoModelForCausalLM.from_pretrained(str(model_dir), quantization_config=q, dtype=dtype, device_map=device)


def _check_gptq(calibration: list[str]) -> None:
    try:
        import gptqmodel  # noqa: F401
    except ImportError:
        raise ValueError("quant.method: gptq needs gptqmodel: pip install --no-deps -r requirements-gptq.txt "
                         "(make setup does it)") from None
    if not any(t.strip() for t in calibration):
        raise ValueError("quant.method: gptq needs calibration text, and the train pairs gave none")


def _gptq(model_dir: Path, out: Path, cfg: QuantConfig, calibration: list[str], tokenizer) -> None:
    """GPTQ through gptqmodel, on CUDA when there is one, else on CPU with its torch kernels.

    gptqmodel writes a ``logs/`` folder into the working directory and refuses to start on a
    machine of two cores or fewer unless told how many CPU workers to use: it runs from a
    scratch directory, with the worker count set. The saved ``quant_log.csv`` loses its wall-time
    column and is written in a fixed row order, so that the out is the same bytes on every run.
    """
    cpus = os.cpu_count() or 1
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(max(2, min(12, (cpus + 1) // 2))))
    from gptqmodel import BACKEND, GPTQModel, QuantizeConfig

    device = "cuda" if torch.cuda.is_available() else "cpu"
    qcfg = QuantizeConfig(bits=cfg.gptq_bits, group_size=cfg.gptq_group_size, device=device, offload_to_disk=False)
    texts = [t for t in calibration if t.strip()][: cfg.calibration_samples]
    model_dir, out, cwd = model_dir.resolve(), out.resolve(), os.getcwd()
    with tempfile.TemporaryDirectory(prefix="gptq-") as scratch:
        os.chdir(scratch)
        try:
            model = GPTQModel.load(str(model_dir), qcfg)
            model.quantize(texts, tokenizer=tokenizer, batch_size=cfg.calibration_batch_size,
                           backend=BACKEND.AUTO if device == "cuda" else BACKEND.TORCH)
            model.save(str(out))
        finally:
            os.chdir(cwd)
    log_csv = out / "quant_log.csv"
    if log_csv.exists():
        header, *rows = [line.split(",") for line in log_csv.read_text().splitlines()]
        keep = [i for i, name in enumerate(header) if name != "time"]
        rows.sort(key=lambda r: (int(r[0]) if r[0].isdigit() else -1, r[1:]))  # worker threads finish in any order
        log_csv.write_text("".join(",".join(r[i] for i in keep) + "\n" for r in [header, *rows]))


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
