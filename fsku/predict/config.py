"""Configs of the ``evaluate`` and ``predict`` stages (``params.yaml`` sections ``eval`` and ``predict``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fsku.config import ConfigError, field


@dataclass
class AnswerConfig:
    backend: Literal["auto", "vllm", "transformers"] = field(
        "transformers", doc="auto = vLLM when it imports and starts; transformers scores options in one pass")
    mcq_mode: Literal["option_pmi", "option", "loglik", "generate"] = field(
        "option", doc="option: mean log-prob of each option's text given the context and the stem (cloze prompt); "
                      "option_pmi: that minus the same without the retrieved context; loglik: the likeliest '정답: N'; "
                      "generate: the number read from a generated answer")
    mcq_max_tokens: int = field(32, ge=1, le=4096, doc="generate mode: tokens for a multiple-choice answer")
    max_tokens: int = field(64, ge=1, le=8192, doc="tokens for an open-ended answer")
    frequency_penalty: float = field(
        0.0, ge=0.0, le=2.0, doc="open-ended answers: a token's logit loses this per earlier use in the answer "
                                 "(gen.*.frequency_penalty; breaks greedy loops, the context is not counted)")
    batch_size: int = field(8, ge=1, le=4096)
    question_timeout_s: float = field(
        60.0, gt=0, doc="per question; a generation batch stops after this times its size and late answers fall back")
    call_grace_s: float = field(
        30.0, ge=0, doc="a model call's hard limit is its questions' time plus this; past it the call is abandoned "
                        "and its questions fall back (vLLM and option scoring have no soft limit)")
    breaker_failures: int = field(3, ge=1, doc="consecutive failed or timed-out model calls that open the breaker")
    breaker_cooldown: int = field(
        8, ge=0, le=100_000, doc="open breaker: questions answered by the fallback before a trial call")


@dataclass
class EvalConfig(AnswerConfig):
    questions: str = field("data/raw/questions/eval.csv", doc="FSKU-format file(s) with Answer (and Keyword)")
    similarity_model: str = field(
        "models/encoder", doc="sentence-transformers model for the open-ended cosine; char-bigram = model-free")
    limit: int = field(0, ge=0, doc="evaluate only the first N questions; 0 = all")
    seed: int = field(0, doc="the random MCQ baseline's draw")


@dataclass
class PredictConfig(AnswerConfig):
    time_budget_s: float = field(16200.0, gt=0, doc="whole run; projected overrun -> fast mode, then fallback only")
    fast_max_tokens: int = field(24, ge=1, le=8192, doc="open-ended tokens in fast mode")
    cache: bool = field(True, doc="keep answers by question hash in data/predict/cache so a rerun resumes")

    def validate(self) -> None:
        if self.fast_max_tokens > self.max_tokens:
            raise ConfigError(f"fast_max_tokens: {self.fast_max_tokens} is above max_tokens ({self.max_tokens})")
