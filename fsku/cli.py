"""``python -m fsku``: the scorer and the predictor as commands, for any file in the FSKU formats.

    python -m fsku score --pred submission.csv --gold mcq.csv [open.csv] [--similarity MODEL]
    python -m fsku predict --model models/quantized --test test.csv --out submission.csv
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def _section(cls, name: str, params: str, keys=None):
    """A params section as the predict stage reads it (``load_section``: a missing section is an
    error), or its defaults when there is no params file at all (a bare checkout)."""
    from fsku.config import load_section

    if not Path(params).is_file():
        return cls()
    return load_section(cls, name, params, keys)


def read_predictions(path: str | Path) -> dict[str, str]:
    """``ID, Answer`` rows; a repeated ID is an error."""
    from fsku.questions import read_csv_rows

    out: dict[str, str] = {}
    for lineno, row in enumerate(read_csv_rows(path, ("ID", "Answer")), 2):
        qid = row["ID"].strip()
        if qid in out:
            raise ValueError(f"{path}: row {lineno}, column ID: duplicate ID {qid}")
        out[qid] = row["Answer"]
    return out


def score(args) -> dict:
    from fsku.metric import Similarity, default_similarity, score_items, summarize
    from fsku.questions import load_answered

    golds = load_answered(args.gold)
    preds = read_predictions(args.pred)
    sim_name = args.similarity or default_similarity()
    items = score_items(golds, preds, Similarity(sim_name))
    result = {"similarity_model": sim_name, **summarize(items)}
    extra = sorted(set(preds) - {q.id for q in golds})
    result["extra_ids"] = len(extra)
    if extra:
        logging.warning("%d predicted ID(s) not in the gold file(s), e.g. %s", len(extra), ", ".join(extra[:3]))
    return result


def predict(args) -> dict:
    from fsku.gen.config import CONTEXT_KEYS, ENGINE_KEYS, GenConfig, PromptsConfig
    from fsku.io import write_json
    from fsku.predict.config import PredictConfig
    from fsku.predict.run import load_retriever, predict_file
    from fsku.retrieval.config import SEARCH_KEYS, IndexConfig
    from fsku.stage import paths

    cfg = _section(PredictConfig, "predict", args.params)
    args.index = paths()["index"] if args.index is None else args.index
    args.cache = paths()["predict_cache"] if args.cache is None else args.cache
    index_cfg = _section(IndexConfig, "index", args.params, SEARCH_KEYS) if args.index else None
    search = load_retriever(args.index, index_cfg)
    out = Path(args.out)
    sidecar = args.sidecar or str(out.with_name("predictions.jsonl"))
    stats = predict_file(args.model, args.test, out, cfg, _section(GenConfig, "gen", args.params, ENGINE_KEYS),
                         _section(PromptsConfig, "prompts", args.params, CONTEXT_KEYS), search, sidecar=sidecar,
                         cache_dir=args.cache)
    if args.metrics:
        write_json(args.metrics, stats)
    return stats


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fsku", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("score", help="score a submission against FSKU answer files")
    s.add_argument("--pred", required=True, help="ID,Answer CSV")
    s.add_argument("--gold", required=True, nargs="+",
                   help="FSKU file(s) with Answer (MCQ and open-ended, one or two files)")
    s.add_argument("--similarity", default=None,
                   help="sentence-transformers model for the open-ended cosine, or char-bigram "
                        "(default: models/encoder when built, else char-bigram)")
    s.set_defaults(fn=score)
    q = sub.add_parser("predict", help="answer a competition-format test.csv")
    q.add_argument("--model", required=True, help="model dir: merged, quantized, or a LoRA adapter dir")
    q.add_argument("--test", required=True, help="ID,Question CSV")
    q.add_argument("--out", required=True, help="submission CSV to write (ID,Answer)")
    q.add_argument("--sidecar", default=None, help="per-question records (default: predictions.jsonl beside --out)")
    q.add_argument("--index", default=None, help="retrieval index (default: paths.index); '' = no retrieved context")
    q.add_argument("--params", default="params.yaml", help="settings (sections predict, gen, prompts, index)")
    q.add_argument("--cache", default=None, help="resume cache dir (default: paths.predict_cache); '' = none")
    q.add_argument("--metrics", default=None, help="also write the run's figures as JSON here")
    q.set_defaults(fn=predict)
    return p


def main(argv: list[str] | None = None) -> int:
    from fsku.stage import EXPECTED, setup_logging

    setup_logging()
    args = build_parser().parse_args(argv)
    try:
        result = args.fn(args)
    except EXPECTED as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(result, ensure_ascii=False, indent=2))
    return 0
