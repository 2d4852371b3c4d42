"""A pair's token ids as the distill trainer sees them: one tokenisation shared by the trainer and
the ``teacher_logits`` stage, so that cached teacher distributions line up with the trained rows."""

from __future__ import annotations


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def pair_token_ids(tokenizer, ex: dict) -> dict[str, list[int]]:
    """TRL's tokenisation of a plain-text pair: EOS appended to each answer, the completion starting
    where the prompt's tokens and the prompt+answer tokens diverge (a merge across the boundary
    moves it left), for both answers at the same point."""
    eos = tokenizer.eos_token or ""
    prompt_ids = tokenizer(ex["prompt"]).input_ids
    full = {k: tokenizer(ex["prompt"] + (ex[k] if ex[k].endswith(eos) else ex[k] + eos)).input_ids
            for k in ("chosen", "rejected")}
    n = min(common_prefix(prompt_ids, full["chosen"]), common_prefix(prompt_ids, full["rejected"]))
    return {"prompt_ids": prompt_ids[:n], "chosen_ids": full["chosen"][n:], "rejected_ids": full["rejected"][n:]}
