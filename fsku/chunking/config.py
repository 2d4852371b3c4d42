"""Config of the ``chunk`` stage (``params.yaml`` section ``chunk``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fsku.config import ConfigError, field


@dataclass
class ChunkConfig:
    size: int = field(500, ge=20, le=100_000, doc="maximum chunk length, in `unit`")
    overlap: int = field(60, ge=0, doc="trailing context carried into the next chunk, in `unit`")
    unit: Literal["chars", "tokens"] = "chars"
    tokenizer: str = field("", doc="tokenizer (name, dir or tokenizer.json) when unit is tokens")
    min_chars: int = field(10, ge=0, doc="chunks shorter than this are dropped")

    def validate(self) -> None:
        if self.overlap >= self.size:
            raise ConfigError(f"overlap: {self.overlap} must be smaller than size ({self.size})")
        if self.unit == "tokens" and not self.tokenizer:
            raise ConfigError("tokenizer: required when unit is 'tokens'")
