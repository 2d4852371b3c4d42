"""Sweep the hybrid fusion settings on the labelled retrieval queries.

    python benchmarks/fusion_sweep.py [--index models/index] [--queries data/raw/retrieval_queries.csv]

Needs a built index (`dvc repro index`). Candidate lists are computed once per query, then fused
under each setting; prints recall@1/5/10 and MRR per setting. The defaults in params.yaml
(`index.hybrid`) were chosen from this table (see benchmarks/RESULTS.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fsku.config import load_section  # noqa: E402
from fsku.retrieval.config import IndexConfig  # noqa: E402
from fsku.retrieval.evaluate import load_queries, relevant_rows  # noqa: E402
from fsku.retrieval.hybrid import Retriever, fuse  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--index", default="models/index")
    p.add_argument("--queries", default="data/raw/retrieval_queries.csv")
    p.add_argument("--params", default="params.yaml")
    args = p.parse_args()
    cfg = load_section(IndexConfig, "index", args.params)
    retriever = Retriever.load(args.index, cfg)
    queries = load_queries(args.queries)
    n = cfg.hybrid.candidates
    cands = [(retriever.sparse(q["query"], n), retriever.dense(q["query"], n),
              relevant_rows(retriever.chunks, q, cfg.eval.min_overlap)) for q in queries]
    print(f"{'method':8} {'w_bm25':>6} {'w_dense':>7} {'R@1':>6} {'R@5':>6} {'R@10':>6} {'MRR':>6}")
    for method in ("weighted", "rrf"):
        for wb in np.round(np.arange(0.0, 1.01, 0.1), 1):
            h = dataclasses.replace(cfg.hybrid, method=method, bm25_weight=float(wb), dense_weight=float(1 - wb))
            ranks = []
            for sparse, dense, rel in cands:
                fused = fuse(sparse, dense, h)
                ranks.append(next((i + 1 for i, (row, _) in enumerate(fused) if row in rel), np.inf))
            r = np.asarray(ranks)
            print(f"{method:8} {wb:6.1f} {1 - wb:7.1f} {(r <= 1).mean():6.3f} {(r <= 5).mean():6.3f} "
                  f"{(r <= 10).mean():6.3f} {np.where(np.isfinite(r), 1 / r, 0).mean():6.3f}")


if __name__ == "__main__":
    main()
