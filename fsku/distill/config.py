"""Config of the ``distill`` stage (``params.yaml`` section ``train``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fsku.config import ConfigError, field

LOSSES = ("distillm2", "fkl", "rkl", "skl", "srkl", "jsd")


@dataclass
class LoraParams:
    enabled: bool = field(True, doc="LoRA adapter (true) or full fine-tuning (false)")
    r: int = field(16, ge=1, le=512)
    alpha: int = field(32, ge=1)
    dropout: float = field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj",
                                                               "gate_proj", "up_proj", "down_proj"])


@dataclass
class GkdParams:
    """``train.gkd``: on-policy distillation through TRL's ``GKDTrainer``, under ``GKDConfig``'s names."""
    lmbda: float = field(0.5, ge=0.0, le=1.0, doc="share of steps trained on the student's own samples")
    beta: float = field(0.5, ge=0.0, le=1.0, doc="generalised JSD: 0 = forward KL, 1 = reverse KL")
    temperature: float = field(0.9, gt=0.0, doc="sampling temperature of the on-policy answers")
    max_new_tokens: int = field(64, ge=1, doc="tokens per on-policy answer")
    seq_kd: bool = field(False, doc="off-policy steps on fresh teacher samples instead of the pairs' answers")


@dataclass
class GoldParams:
    """``train.gold``: TRL's ``GOLDTrainer``, under ``GOLDConfig``'s names; on-policy settings from ``train.gkd``."""
    use_uld_loss: bool = field(True, doc="teacher and student tokenizers differ: align the two by text (ULD); "
                               "false stops the stage instead")
    use_extended_uld: bool = field(True, doc="ULD merges split tokens by byte offsets (both tokenizers byte-level "
                                   "BPE); otherwise, and when false, positional ULD (sorted probabilities)")
    uld_use_hybrid_loss: bool = field(False, doc="JSD on tokens both vocabularies share, ULD on the rest")
    uld_crossentropy_weight: float = field(0.0, ge=0.0, doc="weight of the student's cross-entropy on the answers")
    uld_distillation_weight: float = field(1.0, ge=0.0)


@dataclass
class TrainConfig:
    method: Literal["distillm2", "gkd", "gold"] = field(
        "distillm2", doc="distillm2: contrastive, offline pairs; gkd: on-policy, TRL's GKDTrainer (train.gkd); "
        "gold: on-policy, TRL's GOLDTrainer, across tokenizers by ULD (train.gkd, train.gold)")
    teacher_system: str = field("", doc="system prompt of the teacher's input only (gkd; gold across tokenizers): "
                                "what the student should learn to do without being told")
    gkd: GkdParams = field(default_factory=GkdParams)
    gold: GoldParams = field(default_factory=GoldParams)
    loss: Literal["distillm2", "fkl", "rkl", "skl", "srkl", "jsd"] = "distillm2"
    beta: float = field(1.0, ge=0.0, le=2.0, doc="weight of the student-answer term: (2-beta) SKL + beta SRKL")
    gradual_beta: bool = field(False, doc="DistiLLM-2's schedule: beta + 0.5 over the first half of training")
    alpha1: float = field(0.1, ge=0.0, lt=1.0, doc="skew of SKL on teacher answers")
    alpha2: float = field(0.1, ge=0.0, lt=1.0, doc="skew of SRKL on student answers")
    adaptive_alpha: bool = field(False, doc="per-sequence skew from the teacher/student probability gap")
    warm_start_steps: int = field(0, ge=0, doc="first steps trained with warm_start_loss (a far-off student)")
    warm_start_loss: Literal["fkl", "rkl", "skl", "srkl", "jsd"] = "fkl"
    jsd_lambda: float = field(0.5, gt=0.0, lt=1.0, doc="jsd: the teacher's weight in the mixture")
    loss_chunk: int = field(128, ge=1, doc="positions per chunk in the loss (memory vs speed)")
    teacher_logits: Literal["online", "cached"] = field(
        "online", doc="online: the teacher runs beside the student on every step; cached: its top-k "
        "distributions from the teacher_logits stage (data/teacher_logits), no teacher while training")
    fused_loss: bool = field(True, doc="the loss from hidden states and LM heads, chunk by chunk (the full "
                             "logits never exist); false: from both models' full response logits")
    epochs: float = field(2.0, gt=0.0)
    max_steps: int = field(-1, ge=-1, doc="stop after this many optimizer steps; -1 = by epochs")
    batch_size: int = field(2, ge=1, doc="pairs per device per step")
    grad_accum: int = field(1, ge=1)
    learning_rate: float = field(5e-4, gt=0.0, le=1.0)
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "cosine"
    warmup_ratio: float = field(0.1, ge=0.0, lt=1.0)
    weight_decay: float = field(0.0, ge=0.0)
    max_grad_norm: float = field(1.0, gt=0.0)
    max_length: int = field(2048, ge=16, doc="prompt + answer tokens; longer pairs are cut at the end")
    bf16: Literal["auto", True, False] = field(
        "auto", doc="bf16 autocast, the teacher in bf16; auto: on a GPU or a CPU with AMX/AVX512-BF16 (fsku.kernels)")
    gradient_checkpointing: bool = False
    save_steps: int = field(10, ge=1, doc="checkpoint every this many steps (resume after a kill)")
    logging_steps: int = field(1, ge=1)
    num_processes: int = field(1, ge=1, doc="processes for accelerate launch (DDP)")
    seed: int = 0
    lora: LoraParams = field(default_factory=LoraParams)

    def validate(self) -> None:
        if self.loss not in LOSSES:  # pragma: no cover - Literal already checks
            raise ConfigError(f"loss: unknown {self.loss!r}")
        if self.lora.enabled and not self.lora.target_modules:
            raise ConfigError("lora.target_modules: empty; name the modules LoRA adapts")
        if self.teacher_system and self.method == "distillm2":
            raise ConfigError(f"teacher_system: method {self.method} trains on the pairs' prompts as the student "
                              "sees them and would ignore it; use method gkd, or leave it empty")
        if self.method in ("gkd", "gold") and self.gkd.max_new_tokens >= self.max_length:
            raise ConfigError(f"gkd.max_new_tokens: {self.gkd.max_new_tokens} leaves no room for the prompt within "
                              f"max_length {self.max_length}")
        if self.teacher_logits == "cached" and self.method != "distillm2":
            raise ConfigError(f"teacher_logits: cached serves the distillm2 method's pairs; method {self.method} "
                              "samples new answers that no cache holds: use online")
        if self.teacher_logits == "cached" and not self.fused_loss:
            raise ConfigError("teacher_logits: cached needs fused_loss: true (the loss that reads the cache)")
        if self.teacher_system and self.gkd.seq_kd:
            raise ConfigError("gkd.seq_kd: samples the teacher on the student's prompt, without teacher_system; "
                              "turn one of them off")


@dataclass
class TeacherLogitsConfig:
    """``params.yaml`` section ``teacher_logits``: the ``teacher_logits`` stage."""
    top_k: int = field(64, ge=1, doc="teacher tokens kept per answer position (the rest of its mass as one bucket)")
    batch_size: int = field(4, ge=1, doc="sequences per teacher forward pass")
