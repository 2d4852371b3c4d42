"""Multiple-choice scoring cost per question, side by side on the same prompts in one run:

- ``loglik``: one pass of the full prompt (options listed), the digit after "정답: " (the old default);
- ``option`` (shared): the options' text on one cached pass of the cloze prompt (context and stem),
  options batched on the cache (the default);
- ``option`` (naive): each option's full sequence scored on its own (what the cache saves);
- ``option_pmi`` (shared): ``option`` plus the same on the cloze prompt without its context.

    python benchmarks/bench_options.py [--model models/teacher] [--questions 8]

Needs `make run` (a model dir and models/index). Reports seconds per question and the ratio to loglik.
"""

from __future__ import annotations

import argparse
import time

import torch

from common import ROOT, machine

from fsku.config import load_section
from fsku.gen.backends import TransformersBackend, option_sequences
from fsku.gen.choice import option_scores
from fsku.gen.config import GenConfig, PromptsConfig
from fsku.gen.format import format_prompt
from fsku.gen.prompts import cloze_prompt, user_prompt
from fsku.predict.run import load_retriever
from fsku.questions import load_questions
from fsku.retrieval.config import IndexConfig


def naive_option(backend, prompt: str, options: list[str]) -> list[float]:
    head, seqs = option_sequences(backend.tokenizer, prompt, options, backend.cfg.max_model_len)
    out = []
    with torch.no_grad():
        for s in seqs:
            lp = torch.log_softmax(backend.model(torch.tensor([s]), logits_to_keep=len(s) - head + 1).logits[0, :-1]
                                   .float(), -1)
            out.append(float(lp.gather(-1, torch.tensor(s[head:])[:, None]).mean()))
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default=str(ROOT / "models/teacher"))
    p.add_argument("--questions", type=int, default=8)
    args = p.parse_args()
    params = ROOT / "params.yaml"
    pc = load_section(PromptsConfig, "prompts", params)
    search = load_retriever(ROOT / "models/index", load_section(IndexConfig, "index", params))
    qs = [q for q in load_questions(ROOT / "data/raw/questions/eval.csv") if q.is_mcq][: args.questions]
    b = TransformersBackend(args.model, load_section(GenConfig, "gen", params))
    hits = [search(q.stem, pc.top_k) for q in qs]
    full = [format_prompt(b.tokenizer, user_prompt(q, h, pc)) for q, h in zip(qs, hits)]
    items = [(format_prompt(b.tokenizer, cloze_prompt(q, h, pc)), format_prompt(b.tokenizer, cloze_prompt(q, [], pc)),
              q.options) for q, h in zip(qs, hits)]
    listed = dict(zip(map(id, items), full))
    option_scores(b, *items[0], "option")  # warm-up
    runs = {"loglik": lambda it: option_scores(b, listed[id(it)], it[1], it[2], "loglik"),
            "option (shared prompt pass)": lambda it: option_scores(b, *it, "option"),
            "option (naive, per option)": lambda it: naive_option(b, it[0], it[2]),
            "option_pmi (shared prompt pass)": lambda it: option_scores(b, *it, "option_pmi")}
    print(machine(), f"torch threads {torch.get_num_threads()}")
    print(f"{args.model}: {len(qs)} questions, {sum(len(it[2]) for it in items) / len(items):.1f} options on average")
    base = None
    for name, fn in runs.items():
        t = time.perf_counter()
        for it in items:
            fn(it)
        per_q = (time.perf_counter() - t) / len(items)
        base = base or per_q
        print(f"{name:34s} {per_q:6.2f} s/question  {per_q / base:5.2f}x loglik")


if __name__ == "__main__":
    main()
