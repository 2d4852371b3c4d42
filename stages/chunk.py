"""Stage `chunk`: PDFs in data/raw/corpus -> data/processed/chunks.jsonl, metrics/chunk.json."""

from fsku.chunking.config import ChunkConfig
from fsku.chunking.pipeline import chunk_corpus
from fsku.config import load_section
from fsku.io import write_json, write_jsonl
from fsku.stage import parser, paths, run


def main() -> None:
    P = paths()
    p = parser(__doc__)
    p.add_argument("--corpus", default=P["corpus"])
    p.add_argument("--out", default=P["chunks"])
    p.add_argument("--metrics", default=P["metrics"]["chunk"])
    args = p.parse_args()
    cfg = load_section(ChunkConfig, "chunk", args.params)
    rows, metrics = chunk_corpus(args.corpus, cfg)
    write_jsonl(args.out, rows)
    write_json(args.metrics, metrics)


if __name__ == "__main__":
    run(main)
