"""Stage `teacher_logits`: the teacher's top-k next-token distributions over every answer token of
the train pairs -> data/teacher_logits/train.safetensors (read by `distill` when
train.teacher_logits is cached), and what the k tokens cover -> metrics/teacher_logits.json.

With train.teacher_logits online (the default) `distill` does not read them, so the stage runs no
teacher: its out holds only a note saying so, the same whatever `teacher_logits.*` says, so that
changing those keys does not rerun `distill` either. Setting cached reruns it for real.

    python -m stages.teacher_logits [--params P] [--pairs data/pairs] [--teacher models/teacher]
"""

import time
from pathlib import Path

import torch

from fsku.config import load_section
from fsku.distill.config import TeacherLogitsConfig, TrainConfig
from fsku.distill.examples import load_examples
from fsku.distill.teacher_cache import NOT_COMPUTED, compute, save, sequences
from fsku.io import atomic_dir, write_json, write_text
from fsku.stage import parser, paths, run


def main() -> None:
    P = paths()
    p = parser(__doc__)
    p.add_argument("--pairs", default=P["pairs"])
    p.add_argument("--teacher", default=P["teacher"])
    p.add_argument("--out", default=P["teacher_logits"])
    p.add_argument("--metrics", default=P["metrics"]["teacher_logits"])
    args = p.parse_args()
    cfg = load_section(TeacherLogitsConfig, "teacher_logits", args.params)
    if load_section(TrainConfig, "train", args.params, ("teacher_logits",)).teacher_logits == "online":
        with atomic_dir(args.out) as tmp:
            write_text(Path(tmp) / NOT_COMPUTED, "No teacher logits here: train.teacher_logits is online, so distill "
                       "runs the teacher itself and never reads them. Set train.teacher_logits: cached and rerun "
                       "this stage (dvc repro does).\n")
        write_json(args.metrics, {"computed": False, "reason": "train.teacher_logits is online"})
        print("teacher logits: not computed (train.teacher_logits is online: distill runs the teacher itself)")
        return
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.teacher)
    pairs = Path(args.pairs) / "train.jsonl"
    seqs = sequences(tokenizer, load_examples(pairs, tokenizer))
    if not seqs:
        raise ValueError(f"{pairs}: no pairs to compute teacher logits for")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    teacher = AutoModelForCausalLM.from_pretrained(args.teacher, dtype=torch.float32).eval().to(device)
    started = time.perf_counter()
    tensors, summary = compute(teacher, seqs, cfg.top_k, cfg.batch_size, tokenizer.pad_token_id or 0)
    seconds = time.perf_counter() - started
    with atomic_dir(args.out) as tmp:
        save(Path(tmp), tensors, {"pairs": len(seqs) // 2, "top_k": cfg.top_k, "vocab": summary["vocab"]})
    size = (Path(args.out) / "train.safetensors").stat().st_size
    write_json(args.metrics, {"computed": True, **summary, "pairs": len(seqs) // 2, "size_mb": round(size / 2**20, 2),
                              "seconds": round(seconds, 1)})
    print(f"teacher logits: {summary['positions']} answer positions of {len(seqs)} sequences, top {cfg.top_k} "
          f"holding {summary['mass_in_top_k_mean']} of the teacher's mass on average, {size / 2**20:.1f} MB")


if __name__ == "__main__":
    run(main)
