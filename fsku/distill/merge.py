"""Merge a LoRA adapter into its base so inference engines serve a plain model."""

from __future__ import annotations

import shutil
from pathlib import Path

from fsku.io import atomic_dir, save_tokenizer
from fsku.models.adapter import find_adapter, merged_model, tokenizer_source


def merge(model_dir: str | Path, out_dir: str | Path) -> str:
    """Adapter -> base with the LoRA weights folded in (``merge_and_unload``), saved as safetensors,
    tokenizer and generation config. A full model passes through unchanged (its files copied).
    Returns what was done."""
    adapter = find_adapter(model_dir)
    if adapter is None:
        with atomic_dir(out_dir) as tmp:
            shutil.copytree(model_dir, tmp, dirs_exist_ok=True)
        return "full model copied unchanged"
    from transformers import AutoTokenizer

    merged = merged_model(adapter)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source(model_dir))
    with atomic_dir(out_dir) as tmp:
        merged.save_pretrained(str(tmp))
        save_tokenizer(tokenizer, tmp)
    return f"LoRA adapter (r={adapter.rank}) merged into {adapter.base}"
