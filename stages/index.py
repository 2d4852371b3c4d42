"""Stage `index`: chunks -> BM25 + FAISS index in models/index, retrieval metrics and plot data."""

import csv

from fsku.config import load_section
from fsku.io import atomic_path, write_json
from fsku.retrieval.build import build_index
from fsku.retrieval.config import IndexConfig
from fsku.retrieval.evaluate import MODES, evaluate, load_queries
from fsku.retrieval.hybrid import Retriever
from fsku.stage import parser, paths, run


def main() -> None:
    P = paths()
    p = parser(__doc__)
    p.add_argument("--chunks", default=P["chunks"])
    p.add_argument("--queries", default=P["retrieval_queries"])
    p.add_argument("--out", default=P["index"])
    p.add_argument("--metrics", default=P["metrics"]["retrieval"])
    p.add_argument("--curve", default=P["metrics"]["retrieval_curve"])
    args = p.parse_args()
    cfg = load_section(IndexConfig, "index", args.params)
    queries = load_queries(args.queries)
    meta = build_index(args.chunks, args.out, cfg)
    metrics, curve = evaluate(Retriever.load(args.out, cfg), queries, cfg.eval.ks, cfg.eval.min_overlap)
    metrics = {"chunks": meta["chunks"], "encoder": meta["encoder"], "fusion": cfg.hybrid.method, **metrics}
    write_json(args.metrics, metrics)
    with atomic_path(args.curve) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["k", *MODES], lineterminator="\n")
        w.writeheader()
        w.writerows(curve)
    print({m: metrics[m] for m in MODES})


if __name__ == "__main__":
    run(main)
