"""Config of the ``synth`` stage (``params.yaml`` section ``synth``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fsku.config import ConfigError, field
from fsku.gen.config import DedupConfig


@dataclass
class SynthConfig:
    per_document: int = field(2, ge=0, le=10_000, doc="questions the teacher writes from each document "
                                                         "(candidates, before the gate); 0 = the stage writes none")
    min_chunk_chars: int = field(150, ge=1, doc="shorter chunks are not written from")
    five_option_share: float = field(0.25, ge=0.0, le=1.0, doc="share of multiple-choice questions with 5 options")
    max_tokens: int = field(160, ge=16, le=4096, doc="tokens of each teacher answer")
    temperature: float = field(0.0, ge=0.0, le=5.0, doc="0 = greedy")
    min_grounding: float = field(0.6, ge=0.0, le=1.0, doc="share of the key's (or reference answer's) character "
                                                          "bigrams the source chunk must hold")
    round_trip: bool = field(True, doc="keep a multiple-choice question only if the teacher, given its chunk, "
                                       "picks the key")
    judge: Literal["none", "measure", "reject"] = field(
        "none", doc="the teacher scores each candidate that passed the gates 1-10 on a rubric: measure records "
                    "the scores and how many fall below judge_threshold; reject also rejects them")
    judge_threshold: float = field(7.0, ge=1.0, le=10.0, doc="the design's pass mark")
    leak_files: list[str] = field(default_factory=list, doc="more question files no synthetic question may "
                                                             "near-duplicate (eval.questions and the test file always)")
    dedup: DedupConfig = field(default_factory=DedupConfig)
    seed: int = 0

    def validate(self) -> None:
        if any(not isinstance(x, str) or not x for x in self.leak_files):
            raise ConfigError("leak_files: every entry must be a file path")
