"""What a model directory holds, resolved once: a plain model, a quantized one, or a LoRA adapter
(what PEFT saves: ``adapter_config.json`` + adapter weights) over a base, and where its tokenizer is.

A distilled student may be an adapter over its base model rather than a full model. Generation
serves it as such: vLLM with a LoRA request on the base, transformers by merging it into the base
(``merged_model``, the one merge, which the ``merge`` stage saves).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Adapter:
    path: str
    base: str   # the base model's dir or hub id, as the adapter config names it
    rank: int


def find_adapter(model_dir: str | Path) -> Adapter | None:
    """The adapter in ``model_dir``, or None when it holds a plain model (or is a hub id)."""
    cfg_file = Path(model_dir) / "adapter_config.json"
    if not cfg_file.is_file():
        return None
    cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    base = cfg.get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{cfg_file}: base_model_name_or_path is missing, so the adapter's base is unknown")
    return Adapter(str(model_dir), base, int(cfg.get("r", 8)))


def tokenizer_source(model_dir: str | Path) -> str:
    """Where to load the tokenizer from: the adapter dir when it carries one, else its base."""
    adapter = find_adapter(model_dir)
    if adapter and not (Path(model_dir) / "tokenizer_config.json").is_file():
        return adapter.base
    return str(model_dir)


def is_quantized(model_dir: str | Path) -> bool:
    """Whether a model dir holds pre-quantized weights (bitsandbytes, GPTQ, ...)."""
    cfg = Path(model_dir) / "config.json"
    return cfg.is_file() and "quantization_config" in json.loads(cfg.read_text(encoding="utf-8"))


@dataclass(frozen=True)
class ModelSource:
    """A model directory (or hub id) resolved once, handed to whichever backend serves it."""
    path: str
    adapter: Adapter | None
    tokenizer: str    # where its tokenizer loads from
    quantized: bool


def resolve_model(model: str | Path | ModelSource) -> ModelSource:
    if isinstance(model, ModelSource):
        return model
    return ModelSource(str(model), find_adapter(model), tokenizer_source(model), is_quantized(model))


def merged_model(adapter: Adapter):
    """The adapter's base with its LoRA weights folded in (``merge_and_unload``), in the base's dtype."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(adapter.base)
    return PeftModel.from_pretrained(base, adapter.path).merge_and_unload().to(base.dtype)
