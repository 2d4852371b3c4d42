"""LoRA adapter directories (what PEFT saves: ``adapter_config.json`` + adapter weights).

A distilled student may be an adapter over its base model rather than a full model. Generation
serves it as such: vLLM with a LoRA request on the base, transformers by merging it into the base.
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
