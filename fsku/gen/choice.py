"""Choosing an option by the model's own likelihoods, and answers constrained to the option set.

A small model that generates ``정답: N`` mostly shows a prior over digit positions; scored on the
options' own text it shows what it knows, provided the prompt does not list the options (a model that
has just read an option likes to repeat it): the text scorings take ``fsku.gen.prompts.cloze_prompt``,
the retrieved context and the stem. ``option`` scores each option's text there; ``option_pmi``
subtracts the same given the stem without the context, cancelling the model's taste for short or
common phrasings but also what it knew without the context.
"""

from __future__ import annotations

ANSWER_PREFIX = "정답: "
SCORINGS = ("option_pmi", "option", "loglik")


def option_scores(backend, prompt: str, bare: str, options: list[str], how: str) -> list[float]:
    """One score per option, higher is likelier. ``loglik``: log P("정답: N" | prompt), the digit
    after the answer mark (``prompt`` lists the options). ``option``: mean log-probability of the
    option's text given ``prompt`` (a cloze prompt). ``option_pmi``: that minus the same given
    ``bare`` (the cloze prompt without its retrieved context)."""
    if how == "loglik":
        conts = [f"{ANSWER_PREFIX}{i}" for i in range(1, len(options) + 1)]
        return backend.continuation_logprobs([prompt], [conts])[0]
    return text_scores(backend, prompt, bare if how == "option_pmi" else None, options)[how]


def text_scores(backend, prompt: str, bare: str | None, options: list[str]) -> dict[str, list[float]]:
    """``option`` scores, and ``option_pmi`` too when ``bare`` is given: the same passes yield both,
    so every run can report how the other scoring would have chosen."""
    prompts = [prompt] if bare is None else [prompt, bare]
    per_token = backend.option_logprobs(prompts, [options] * len(prompts))
    means = [[sum(t) / len(t) for t in opts] for opts in per_token]
    out = {"option": means[0]}
    if bare is not None:
        out["option_pmi"] = [a - b for a, b in zip(*means)]
    return out


def best(scores: list[float]) -> int:
    """The 1-based option with the highest score; ties go to the lower number."""
    return max(range(len(scores)), key=lambda i: (scores[i], -i)) + 1


def constrained_answer(n: int, options: list[str]) -> str:
    """A multiple-choice answer in the taught format, for option ``n``."""
    return f"{ANSWER_PREFIX}{n} {options[n - 1]}"
