"""Can a model beat the open-ended fallback by choosing sentences rather than writing them?

The ``open_fallback`` baseline answers with the top retrieved chunk's sentences that share the most
characters with the question. This script asks whether a model, scoring every sentence of the
retrieved chunks, picks better ones: each candidate sentence's mean token log-probability given the
cloze prompt (context and question; ``mean``), that minus the same without the question
(``pmi_q``: what the question adds), or minus the same without the context (``pmi_c``). Answers
are the best 1, 2 or as many as fit 300 characters (the fallback's budget), in document order.
Model-free rows beside them: the fallback itself and character overlap over all retrieved chunks.

    python benchmarks/bench_open_extract.py models/teacher models/merged [--questions eval.csv]

Needs `make run` (the model dirs, models/index, models/encoder).
"""

from __future__ import annotations

import argparse
import re
import time

from common import ROOT, machine

from fsku.config import load_section
from fsku.gen.backends import make_backend
from fsku.gen.config import GenConfig, PromptsConfig
from fsku.gen.format import format_prompt
from fsku.gen.prompts import CLOZE_TEMPLATE, NO_CONTEXT, render_context
from fsku.metric import Similarity, score_items, summarize
from fsku.predict.config import EvalConfig
from fsku.predict.fallback import _SENTENCE, answer_from_context
from fsku.predict.run import load_retriever
from fsku.questions import load_questions
from fsku.retrieval.config import IndexConfig
from fsku.scoring import char_ngram_cosine

HANGUL = re.compile("[가-힣]")
MAX_CHARS = 300
MAX_CANDIDATES = 30


def candidates(hits: list[dict]) -> list[str]:
    out: list[str] = []
    for h in hits:
        for s in _SENTENCE.split(" ".join(h["text"].split())):
            s = s.strip()
            if len(s) >= 15 and HANGUL.search(s) and s not in out:
                out.append(s)
    return out[:MAX_CANDIDATES]


def compose(sentences: list[str], scores: list[float], n: int | None) -> str:
    """The ``n`` best (None: as many as fit MAX_CHARS), in document order."""
    ranked = sorted(range(len(sentences)), key=lambda i: (-scores[i], i))
    keep, used = [], 0
    for i in ranked:
        if (n is not None and len(keep) >= n) or (used + len(sentences[i]) > MAX_CHARS and keep):
            break
        keep.append(i)
        used += len(sentences[i])
    return " ".join(sentences[i] for i in sorted(keep))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("models", nargs="+")
    p.add_argument("--questions", default=str(ROOT / "data/raw/questions/eval.csv"))
    args = p.parse_args()
    params = ROOT / "params.yaml"
    cfg = load_section(EvalConfig, "eval", params)
    gen_cfg = load_section(GenConfig, "gen", params)
    pc = load_section(PromptsConfig, "prompts", params)
    search = load_retriever(ROOT / "models/index", load_section(IndexConfig, "index", params))
    qs = [q for q in load_questions(args.questions) if not q.is_mcq]
    sim = Similarity(str(ROOT / cfg.similarity_model))
    hits = {q.id: search(q.stem, pc.top_k) for q in qs}
    cands = {q.id: candidates(hits[q.id]) for q in qs}
    print(f"{machine()}; {len(qs)} open questions, top_k {pc.top_k}, "
          f"{sum(map(len, cands.values())) / len(qs):.1f} candidate sentences each")

    def row(name: str, preds: dict[str, str]) -> None:
        print(f"{name:28s} open {summarize(score_items(qs, preds, sim))['open_score']:.3f}", flush=True)

    row("fallback (model-free)", {q.id: answer_from_context(q, hits[q.id]) for q in qs})
    overlap = {q.id: [char_ngram_cosine(s, q.stem) for s in cands[q.id]] for q in qs}
    for n in (1, 2, None):
        row(f"overlap, all chunks, {n or 'fit'}", {q.id: compose(cands[q.id], overlap[q.id], n) for q in qs})
    for model in args.models:
        backend = make_backend("transformers", ROOT / model, gen_cfg)
        t = time.perf_counter()
        scores = {}
        for q in qs:
            ctx = render_context(hits[q.id], pc.max_context_chars)
            prompts = [format_prompt(backend.tokenizer, CLOZE_TEMPLATE.format(context=c, question=s))
                       for c, s in ((ctx, q.stem), (ctx, ""), (NO_CONTEXT, q.stem))]
            full, no_q, no_c = ([sum(t) / len(t) for t in o]
                                for o in backend.option_logprobs(prompts, [cands[q.id]] * 3))
            scores[q.id] = {"mean": full, "pmi_q": [a - b for a, b in zip(full, no_q)],
                            "pmi_c": [a - b for a, b in zip(full, no_c)]}
        print(f"{model}: scored in {time.perf_counter() - t:.0f} s")
        for how in ("mean", "pmi_q", "pmi_c"):
            for n in (1, 2, None):
                row(f"{model} {how}, {n or 'fit'}", {q.id: compose(cands[q.id], scores[q.id][how], n) for q in qs})
        del backend


if __name__ == "__main__":
    main()
