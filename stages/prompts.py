"""Stage `prompts`: training questions + retrieved context -> data/gen/prompts.jsonl (deduplicated,
capped at prompts.max_prompts) and data/gen/choice_prompts.jsonl (every multiple-choice question,
uncapped: what the teacher's option distributions are computed on)."""

from fsku.config import load_section
from fsku.gen.choice_prompts import build_choice_prompts
from fsku.gen.config import PromptsConfig
from fsku.gen.prompts import build_prompts
from fsku.io import write_json, write_jsonl
from fsku.questions import load_questions, read_csv_rows
from fsku.retrieval.config import SEARCH_KEYS, IndexConfig
from fsku.retrieval.hybrid import Retriever
from fsku.stage import parser, paths, run


def training_questions(source: str, bank: str, synth: str) -> list:
    """The bank, the synthetic questions or both (bank first; IDs must not clash)."""
    out = load_questions(bank) if source in ("bank", "both") else []
    if source in ("synth", "both"):
        if not read_csv_rows(synth, ("ID", "Question")):
            raise ValueError(f"{synth}: no synthetic question passed the gate (metrics/synth.json says why); "
                             "set prompts.source: bank or write more (synth.per_document)")
        ids = {q.id for q in out}
        for q in load_questions(synth):
            if q.id in ids:
                raise ValueError(f"{synth}: ID {q.id} is also in {bank}")
            out.append(q)
    return out


def main() -> None:
    P = paths()
    p = parser(__doc__)
    p.add_argument("--questions", default=P["train_questions"])
    p.add_argument("--synth", default=P["synth_questions"], help="the synth stage's questions")
    p.add_argument("--index", default=P["index"])
    p.add_argument("--out", default=P["prompts"])
    p.add_argument("--choice-out", default=P["choice_prompts"])
    p.add_argument("--metrics", default=P["metrics"]["prompts"])
    args = p.parse_args()
    cfg = load_section(PromptsConfig, "prompts", args.params)
    questions = training_questions(cfg.source, args.questions, args.synth)
    retriever = Retriever.load(args.index, load_section(IndexConfig, "index", args.params, SEARCH_KEYS))
    records, counts = build_prompts(questions, retriever.top_chunks, cfg)
    choices = build_choice_prompts(questions, retriever.top_chunks, cfg)
    counts["choice_prompts"] = len(choices)
    write_jsonl(args.out, records)
    write_jsonl(args.choice_out, choices)
    write_json(args.metrics, counts)
    print({k: v for k, v in counts.items() if k != "duplicates"})


if __name__ == "__main__":
    run(main)
