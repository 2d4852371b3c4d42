"""Stage `predict`: data/raw/test.csv -> submission.csv with the quantized model, a sidecar
data/predict/predictions.jsonl and metrics/predict.json (timings, fallbacks, and the answer checks:
`collapsed` when one option is over 60% of the MCQ answers, the MCQ answer distribution, and the
degenerate open answers the fallback replaced). `python -m fsku predict` runs the same on any file.

An interrupted run, rerun, resumes from the answers cached in data/predict/cache/.
"""

from fsku.config import load_section
from fsku.gen.config import CONTEXT_KEYS, ENGINE_KEYS, GenConfig, PromptsConfig
from fsku.io import write_json
from fsku.predict.config import PredictConfig
from fsku.predict.run import load_retriever, predict_file
from fsku.retrieval.config import SEARCH_KEYS, IndexConfig
from fsku.stage import parser, paths, run


def main() -> None:
    P = paths()
    p = parser(__doc__)
    p.add_argument("--model", default=P["quantized"])
    p.add_argument("--test", default=P["test"])
    p.add_argument("--index", default=P["index"], help="'' = no retrieved context")
    p.add_argument("--out", default=P["submission"])
    p.add_argument("--sidecar", default=P["predict_sidecar"])
    p.add_argument("--cache", default=P["predict_cache"], help="resume cache dir ('' = none)")
    p.add_argument("--metrics", default=P["metrics"]["predict"])
    args = p.parse_args()
    cfg = load_section(PredictConfig, "predict", args.params)
    gen_cfg = load_section(GenConfig, "gen", args.params, ENGINE_KEYS)
    prompts_cfg = load_section(PromptsConfig, "prompts", args.params, CONTEXT_KEYS)
    index_cfg = load_section(IndexConfig, "index", args.params, SEARCH_KEYS) if args.index else None
    search = load_retriever(args.index, index_cfg)
    stats = predict_file(args.model, args.test, args.out, cfg, gen_cfg, prompts_cfg, search, sidecar=args.sidecar,
                         cache_dir=args.cache)
    write_json(args.metrics, stats)
    print({k: stats[k] for k in ("questions", "mcq", "open", "fallbacks", "collapsed", "total_s") if k in stats})


if __name__ == "__main__":
    run(main)
