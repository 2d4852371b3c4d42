"""The interface every generation backend implements (``Backend``), and what they share.

Every method returns, per prompt: text, generated token count, finish reason (``stop`` on an
end-of-sequence token, ``length`` at max_tokens, ``time`` past ``max_time`` where the backend
enforces it), prompt token count and whether the prompt was cut to fit the context. With ``n`` > 1
samples per prompt, those fields describe the first sample and ``samples`` lists all of them.
Backends take a ``fsku.models.adapter.ModelSource`` (or a directory, resolved on the spot).
"""

from __future__ import annotations

from typing import Protocol

from fsku.gen.config import SamplingConfig


class Backend(Protocol):
    name: str
    fallback: str | None   # why ``auto`` did not get vLLM, else None
    tokenizer: object

    def generate(self, prompts: list[str], sp: SamplingConfig, seed: int,
                 max_time: float | None = None) -> list[dict]: ...

    def continuation_logprobs(self, prompts: list[str], continuations: list[list[str]]) -> list[list[float]]:
        """Per prompt, the log-probability of each continuation given the prompt."""

    def option_logprobs(self, prompts: list[str], options: list[list[str]]) -> list[list[list[float]]]:
        """Per prompt, per option, the log-probability of each token of the option's text."""


def option_sequences(tokenizer, prompt: str, options: list[str], max_len: int) -> tuple[int, list[list[int]]]:
    """(index of the first option token, token ids of prompt + option for each option), cut from the
    left to fit ``max_len``. The option's tokens start where the prompt's own tokenisation stops
    agreeing with every full sequence (a merge across the boundary puts the shared token there)."""
    p_ids = tokenizer(prompt, add_special_tokens=True).input_ids
    seqs = [tokenizer(prompt + o, add_special_tokens=True).input_ids for o in options]
    head = min([common_prefix([p_ids, s]) for s in seqs] + [len(s) - 1 for s in seqs])
    cut = max(0, max(len(s) for s in seqs) - max_len)
    if cut and cut >= head:
        raise ValueError(f"options too long to score within max_model_len {max_len}")
    return max(1, head - cut), [s[cut:] for s in seqs]


def common_prefix(seqs: list[list[int]]) -> int:
    n = min(len(s) for s in seqs)
    for i in range(n):
        if any(s[i] != seqs[0][i] for s in seqs[1:]):
            return i
    return n


def with_samples(samples: list[dict], prompt_tokens: int, truncated: bool) -> dict:
    """One prompt's result: the first sample's fields, plus every sample when there are several."""
    out = {**samples[0], "prompt_tokens": prompt_tokens, "prompt_truncated": truncated}
    if len(samples) > 1:
        out["samples"] = samples
    return out
