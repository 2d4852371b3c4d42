"""Initialise a student from the teacher by keeping an evenly spaced subset of decoder layers.

Keeping the first and last layers preserves the input and output representations the embeddings
and LM head expect; the layers between are spread evenly (the layer-dropping initialisation used
for distilled students). Works for decoder-only models whose layers live in ``model.model.layers``
(Llama, Qwen2, Gemma 3 and kin).
"""

from __future__ import annotations

import copy

import torch


def keep_layer_indices(n_layers: int, keep: int) -> list[int]:
    if keep >= n_layers:
        return list(range(n_layers))
    if keep == 1:
        return [n_layers - 1]
    return sorted({round(i * (n_layers - 1) / (keep - 1)) for i in range(keep)})


def prune_layers(model, keep: int):
    """A copy of ``model`` with ``keep`` of its decoder layers (first and last included)."""
    layers = model.model.layers
    idx = keep_layer_indices(len(layers), keep)
    student = copy.deepcopy(model)
    student.model.layers = torch.nn.ModuleList([student.model.layers[i] for i in idx])
    cfg = student.config
    cfg.num_hidden_layers = len(idx)
    if getattr(cfg, "layer_types", None):
        cfg.layer_types = [cfg.layer_types[i] for i in idx]
    for new, layer in enumerate(student.model.layers):  # KV-cache slots follow the new numbering
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new
    return student, idx
