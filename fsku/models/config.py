"""Configs of the model stages (``params.yaml`` sections ``teacher`` and ``student``)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fsku.config import ConfigError, field
from fsku.embedded import STUDENT, TEACHER, is_embedded

Dtype = Literal["auto", "float32", "bfloat16", "float16"]  # auto: fsku.kernels.compute_dtype
HUB_ID = re.compile(r"[\w.-]+(?:/[\w.-]+)?")


def source_problem(source: str) -> str | None:
    """Why ``source`` can name no model, before anything loads: a path (absolute, ``./``, ``../``,
    ``~``, several folders deep or a ``.gguf``) that does not exist. ``owner/name`` (or ``name``) that is
    no local folder is a hub id (the hub is asked at load time)."""
    if Path(source).expanduser().exists() or is_embedded(source):
        return None
    if source.startswith(("/", "./", "../", "~")) or source.endswith(".gguf") or not HUB_ID.fullmatch(source):
        return (f"{source}: no such model directory or file (a local path must exist; a hub id is "
                "owner/name, e.g. Qwen/Qwen2.5-7B-Instruct)")
    return None


@dataclass
class TeacherConfig:
    model: str = field(TEACHER, doc="an embedded model (fsku.embedded), a .gguf file, a local model dir or a hub id")
    dtype: Dtype = field("auto", doc="storage and compute; auto: bfloat16 where the CPU (or a GPU) does it in "
                                     "hardware, else float32")
    chat_template: Literal["zero", "model"] = field(
        "model", doc="zero: frame turns in plain text (a base model); model: keep the tokenizer's own (instruct models)")

    def validate(self) -> None:
        problem = source_problem(self.model)
        if problem:
            raise ConfigError(f"model: {problem}")


@dataclass
class StudentConfig:
    model: str = field(STUDENT, doc="an embedded model, 'prune' (a subset of the teacher's layers), a .gguf file, "
                                    "a local model dir or a hub id")
    keep_layers: int = field(6, ge=1, le=512, doc="decoder layers kept when pruning (first and last kept)")
    dtype: Dtype = field("auto", doc="storage; training keeps float32 master weights (train.bf16 autocasts)")
    own_tokenizer: bool = field(False, doc="allow a student whose tokenizer differs from the teacher's: only "
                                "train.method gold distills across tokenizers (ULD)")

    def validate(self) -> None:
        if not self.model:
            raise ConfigError("model: 'prune', a local model directory or a hub id")
        problem = None if self.model == "prune" else source_problem(self.model)
        if problem:
            raise ConfigError(f"model: {problem}")


def check_smaller(student: str, student_params: int, teacher_params: int) -> None:
    """Distillation shrinks a model: a student at least the teacher's size is a swapped pair."""
    if student_params >= teacher_params:
        raise ConfigError(
            f"student.model: {student} has {student_params:,} parameters, not fewer than the teacher's "
            f"{teacher_params:,}; distillation trains a smaller student: swap teacher.model and student.model, "
            "or name a smaller student")
