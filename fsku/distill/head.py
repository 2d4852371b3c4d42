"""A model's LM head as a function of its last hidden states: what the fused loss and the stored
teacher states (``fsku.distill.quality``) turn into logits a chunk at a time."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Head:
    """What turns a model's last hidden states into its logits: ``cap * tanh(scale * h @ W.T / cap)``
    (Gemma 2's final soft-cap; scale as Cohere's ``logit_scale``), or plain ``h @ W.T``."""
    weight: torch.Tensor            # [V, H]
    scale: float = 1.0
    softcap: float | None = None

    def logits(self, hidden: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(logits in ``dtype``, d logits / d raw logits for the chain rule, or None when it is 1)."""
        z = (hidden.to(self.weight.dtype) @ self.weight.T).to(dtype)
        if self.scale != 1.0:
            z = z * self.scale
        if self.softcap is None:
            return z, None
        t = torch.tanh(z / self.softcap)
        return t * self.softcap, (1 - t * t) * self.scale

    @property
    def backward_scale(self) -> float:
        """d logits / d raw logits when it is a constant (no soft-cap): the scale."""
        return self.scale if self.softcap is None else 1.0


def head_of(model) -> Head:
    """The LM head of a transformers model (PEFT-wrapped or not) with its config's logit transforms."""
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    scale = getattr(cfg, "logit_scale", None)
    if scale is None and getattr(cfg, "logits_scaling", None):  # Granite divides by it
        scale = 1.0 / cfg.logits_scaling
    for name in ("output_multiplier", "lm_head_multiplier"):
        if scale is None and getattr(cfg, name, None) is not None:
            scale = getattr(cfg, name)
    head = model.get_output_embeddings()
    if getattr(head, "bias", None) is not None:
        raise ValueError(f"{type(head).__name__}: an LM head with a bias is not supported (the fused loss: set "
                         "train.fused_loss: false)")
    return Head(head.weight, float(scale) if scale is not None else 1.0,
                getattr(cfg, "final_logit_softcapping", None))
