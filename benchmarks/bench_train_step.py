"""One training step on the default models and data: tokens/s and peak RSS of our DistiLLM-2 trainer
(fsku/distill/trainer.py) vs TRL's own GKD-style distillation trainer, offline, on the same pairs and
batch. Goal: ours at least as fast (speed ratio >= 1) with no more memory (memory ratio <= 1).

    python benchmarks/bench_train_step.py [--steps 4] [--warmup 1] [--batch 2]
        [--teacher models/teacher] [--student models/student_init] [--pairs data/pairs/train.jsonl]

Needs `make run` first (the pairs and both models). Each variant runs in its own fresh process.

Variants
  ours_fused   `ours` with train.fused_loss: true (the loss from hidden states and LM heads).
  ours_cached  `ours_fused` with train.teacher_logits: cached, reading `--teacher-logits`
           (data/teacher_logits: `dvc repro teacher_logits` first): the child never loads the teacher.
  ours     DistillTrainer built as `run_distill` builds it: `load_examples` / `check_examples`, the
           same DPOConfig settings and LoRA config from `TrainConfig()` defaults (loss distillm2), the
           teacher as ref_model, `check_and_align`. Differences, all outside the step: max_steps =
           warmup + steps, save_strategy "no", no before/after `answer_quality`, and
           train_sampling_strategy "sequential" (see below).
  trl_gkd  `trl.experimental.gkd.GKDTrainer` / `GKDConfig` with lmbda=0.0 (never generates, i.e.
           purely offline / supervised KD), seq_kd=False, beta=0.5 (generalized JSD), same teacher,
           student, LoRA config and optimiser settings. Not `trl.DistillationTrainer`: in TRL 1.16
           that one is on-policy only (it has no completion column; `_prepare_inputs` always calls
           `_generate_and_score_completions`, i.e. the student generates every completion), so it
           cannot train on fixed teacher/student answers.

Same text, same batch. Our trainer sees each pair's chosen (teacher) AND rejected (student) sequence in
one step, stacked as 2 x batch rows. GKD gets both answers as separate prompt+completion examples and a
batch of 2 x batch rows, arranged so that its step k holds exactly the rows of our step k (chosen rows
of the k-th group of pairs, then its rejected rows). Both trainers use the sequential sampler so the
order is the same; shuffling would give each variant different sequence lengths per step. The GKD rows
are tokenised by DPOTrainer's own preprocessing (`DPOTrainer._prepare_dataset`, EOS appended, prompt
boundary by common prefix, over-long prompts dropped) and cut at max_length like its collator
(keep_start), then passed pre-tokenised with a completion mask, which GKD's collator
(`DataCollatorForChatML`) accepts: no chat template is needed (the tokenizer has none; the prompt is
the project's plain `format_prompt` text). The rows are identical token for token; only the padding
side differs (DPO pads right, GKD left), with the same padded width.

Tokens/s counts the non-padding tokens of a step (sum of the batch's attention mask: prompt + answer of
every chosen and rejected row), recorded from the batches actually fed: the trainer's data collator is
wrapped to push each batch's count onto a queue, and a TrainerCallback pops one per step
(grad_accum batches) while timing on_step_begin -> on_step_end (forward, backward, optimiser step; the
collation happens before on_step_begin in both). Recording rather than computing from dataset lengths
counts exactly what was trained (after truncation, dropping, epoch wrap-around) whatever the sampler
does; the per-step counts of both variants are printed so it is visible that they did the same work.
The first `--warmup` steps are not timed. tokens/s = timed tokens / timed seconds; s/step is the median.

Memory: peak RSS (ru_maxrss) at the end of the child, and the same peak right after both models are
loaded, so the increase due to training is visible; on CUDA also torch.cuda.max_memory_allocated.

Caveats: the losses differ by design (ours: DistiLLM-2 skew KL + skew reverse KL, logits only from the
first answer position on, chunked over positions; GKD: generalized JSD over the full-sequence logits
of student and teacher), which is what is being compared. GKD materialises full-vocabulary
[rows, seq, 262144] fp32 tensors several times over (log-softmaxes, mixture, two KLs): with ~1k-token
prompts and 4 rows that is several GB each, so on a small-memory machine the trl_gkd child may be
killed for memory; the parent then reports it as failed. `--max-length` caps sequences (prompts longer
than it are dropped, as in training) for a cheaper run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

from common import ROOT, machine

VARIANTS = ("ours", "ours_fused", "ours_cached", "trl_gkd")
RESULT = "RESULT "


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def missing_inputs(args) -> list[str]:
    need = [Path(args.pairs), Path(args.teacher) / "config.json", Path(args.student) / "config.json"]
    return [str(p) for p in need if not p.exists()]


def common_args(cfg, output_dir: str, max_steps: int) -> dict:
    """The TrainingArguments `run_distill` sets (`trainer_args`), less checkpoints; the batch size is
    set by each variant."""
    from fsku.distill.train import trainer_args

    args = trainer_args(cfg, output_dir)
    for key in ("per_device_train_batch_size", "save_steps", "save_total_limit"):
        args.pop(key)
    return {**args, "max_steps": max_steps, "save_strategy": "no", "max_length": cfg.max_length,
            "train_sampling_strategy": "sequential"}  # same batches in both variants (see the docstring)


def gkd_rows(examples: list[dict], tokenizer, cfg, batch: int) -> list[dict]:
    """Each pair as two prompt+completion rows (teacher answer, student answer), tokenised by DPOTrainer's
    own preprocessing and truncated as its collator does, grouped so that GKD batch k (2 x batch rows)
    holds the chosen then the rejected rows of our batch k."""
    from types import SimpleNamespace

    import datasets
    from trl import DPOConfig, DPOTrainer

    ds = datasets.Dataset.from_list([{k: e[k] for k in ("prompt", "chosen", "rejected")} for e in examples])
    dpo_args = DPOConfig(output_dir="/tmp/unused", max_length=cfg.max_length, report_to="none", use_cpu=True)
    ds = DPOTrainer._prepare_dataset(SimpleNamespace(_tokenizer=tokenizer), ds, tokenizer, dpo_args, "train")
    n = cfg.max_length

    def row(prompt_text, prompt_ids, completion_ids):
        ids = (prompt_ids + completion_ids)[:n]
        mask = ([0] * len(prompt_ids) + [1] * len(completion_ids))[:n]
        return {"prompt": prompt_text, "input_ids": ids, "attention_mask": [1] * len(ids), "completion_mask": mask}

    rows = []
    for start in range(0, len(ds), batch):
        group = [ds[i] for i in range(start, min(start + batch, len(ds)))]
        rows += [row(e["prompt"], e["prompt_ids"], e["chosen_ids"]) for e in group]
        rows += [row(e["prompt"], e["prompt_ids"], e["rejected_ids"]) for e in group]
    return rows


def child(variant: str, args) -> dict:
    import shutil
    import tempfile

    import datasets
    import torch
    import transformers
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    from fsku.distill.config import TrainConfig
    from fsku.distill.examples import check_examples, load_examples
    from fsku.models.compat import check_and_align

    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    cfg = TrainConfig()
    cfg.batch_size = args.batch
    cfg.fused_loss = variant in ("ours_fused", "ours_cached")
    cfg.teacher_logits = "cached" if variant == "ours_cached" else "online"
    if args.max_length:
        cfg.max_length = args.max_length
    cuda = torch.cuda.is_available()

    torch.manual_seed(cfg.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.student)
    teacher_tok = AutoTokenizer.from_pretrained(args.teacher)
    examples = load_examples(Path(args.pairs), tokenizer)
    if args.prompt_chars:  # keep the end of each prompt (the question), drop leading context
        for e in examples:
            e["prompt"] = e["prompt"][-args.prompt_chars:]
    check_examples(examples, tokenizer, cfg.max_length, args.pairs)
    dtype = torch.bfloat16 if cfg.bf16 and cuda else torch.float32
    student = AutoModelForCausalLM.from_pretrained(args.student, dtype=dtype)
    cache = None
    if variant == "ours_cached":  # the teacher stays on disk; its logits come from the cache
        from fsku.distill.teacher_cache import TeacherCache, sequences

        teacher = None
        cache = TeacherCache.load(Path(args.teacher_logits))
        cache.check(sequences(tokenizer, examples), args.pairs, student.get_output_embeddings().weight.shape[0])
    else:
        teacher = AutoModelForCausalLM.from_pretrained(args.teacher, dtype=dtype).eval()
        check_and_align(teacher_tok, tokenizer, teacher, student)
        for p in teacher.parameters():
            p.requires_grad_(False)
    loaded_mb = peak_rss_mb()

    peft_config = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                             target_modules=list(cfg.lora.target_modules), task_type="CAUSAL_LM")
    out_dir = tempfile.mkdtemp(prefix=f"bench_train_step_{variant}_")
    max_steps = args.warmup + args.steps
    if variant.startswith("ours"):
        from trl import DPOConfig

        from fsku.distill.trainer import DistillTrainer

        train_ds = datasets.Dataset.from_list([{k: e[k] for k in ("prompt", "chosen", "rejected")} for e in examples])
        targs = DPOConfig(per_device_train_batch_size=cfg.batch_size, **common_args(cfg, out_dir, max_steps))
        trainer = DistillTrainer(model=student, ref_model=teacher, args=targs, train_dataset=train_ds,
                                 processing_class=tokenizer, peft_config=peft_config, distill=cfg, teacher_cache=cache)
        what = (f"DistillTrainer (loss {cfg.loss}, fused {cfg.fused_loss}, teacher {cfg.teacher_logits}), "
                f"{cfg.batch_size} pairs = {2 * cfg.batch_size} rows per step")
    elif variant == "trl_gkd":
        os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
        from trl.experimental.gkd import GKDConfig, GKDTrainer

        train_ds = datasets.Dataset.from_list(gkd_rows(examples, tokenizer, cfg, cfg.batch_size))
        targs = GKDConfig(per_device_train_batch_size=2 * cfg.batch_size, lmbda=0.0, beta=0.5, seq_kd=False,
                          **common_args(cfg, out_dir, max_steps))
        trainer = GKDTrainer(model=student, teacher_model=teacher, args=targs, train_dataset=train_ds,
                             processing_class=tokenizer, peft_config=peft_config)
        what = f"trl.experimental.gkd.GKDTrainer (lmbda 0, beta 0.5), {2 * cfg.batch_size} rows per step"
    else:
        raise ValueError(f"unknown variant {variant!r}")

    counts: deque[int] = deque()  # non-padding tokens of each collated batch, in order
    collate = trainer.data_collator

    def counting_collator(features):
        batch = collate(features)
        counts.append(int(batch["attention_mask"].sum()))
        return batch

    trainer.data_collator = counting_collator

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.steps: list[tuple[float, int]] = []
            self.t0 = 0.0

        def on_step_begin(self, targs, state, control, **kw):
            if cuda:
                torch.cuda.synchronize()
            self.t0 = time.perf_counter()

        def on_step_end(self, targs, state, control, **kw):
            if cuda:
                torch.cuda.synchronize()
            dt = time.perf_counter() - self.t0
            self.steps.append((dt, sum(counts.popleft() for _ in range(targs.gradient_accumulation_steps))))

    timer = StepTimer()
    trainer.add_callback(timer)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    peak_mb = peak_rss_mb()
    shutil.rmtree(out_dir, ignore_errors=True)

    timed = timer.steps[args.warmup:]
    if not timed:
        raise RuntimeError(f"{len(timer.steps)} step(s) ran; none after {args.warmup} warm-up step(s)")
    seconds = sum(t for t, _ in timed)
    return {
        "variant": variant, "what": what, "steps": len(timed),
        "s_per_step": statistics.median(t for t, _ in timed),
        "tokens_per_s": sum(n for _, n in timed) / seconds,
        "tokens_per_step": [n for _, n in timer.steps],
        "rss_loaded_mb": loaded_mb, "rss_peak_mb": peak_mb,
        "cuda_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "max_length": cfg.max_length, "device": "cuda" if cuda else "cpu",
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=4, help="timed steps")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument("--batch", type=int, default=2, help="pairs per step (each a chosen and a rejected row)")
    p.add_argument("--teacher", default=str(ROOT / "models/teacher"))
    p.add_argument("--student", default=str(ROOT / "models/student_init"))
    p.add_argument("--pairs", default=str(ROOT / "data/pairs/train.jsonl"))
    p.add_argument("--teacher-logits", default=str(ROOT / "data/teacher_logits"), help="ours_cached's cache")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    p.add_argument("--max-length", type=int, default=None, help="override TrainConfig().max_length")
    p.add_argument("--prompt-chars", type=int, default=None,
                   help="keep only the last N characters of each prompt (shorter sequences, for machines "
                        "where the baseline's full-sequence logits do not fit)")
    p.add_argument("--child", default=None, choices=VARIANTS)
    args = p.parse_args()
    if args.child:
        print(RESULT + json.dumps(child(args.child, args)), flush=True)
        return
    missing = missing_inputs(args)
    if missing:
        sys.exit(f"missing {', '.join(missing)}: run `make run` first (it builds the pairs and the models)")

    print(f"machine: {machine()}")
    print(f"teacher {args.teacher}, student {args.student}, pairs {args.pairs}")
    print(f"{args.batch} pairs per step, {args.warmup} warm-up + {args.steps} timed steps, "
          "each variant in a fresh process"
          + (f", prompts cut to their last {args.prompt_chars} characters" if args.prompt_chars else ""))
    res = {}
    for variant in args.variants:
        cmd = [sys.executable, __file__, "--child", variant, "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--batch", str(args.batch), "--teacher", args.teacher, "--student", args.student, "--pairs", args.pairs,
               "--teacher-logits", args.teacher_logits]
        if args.max_length:
            cmd += ["--max-length", str(args.max_length)]
        if args.prompt_chars:
            cmd += ["--prompt-chars", str(args.prompt_chars)]
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith(RESULT)]
        if out.returncode or not lines:
            why = " (killed: likely out of memory)" if out.returncode in (-9, 137) else ""
            print(f"  {variant}: failed ({out.returncode}){why} {out.stderr[-800:]}")
            continue
        res[variant] = json.loads(lines[-1][len(RESULT):])
        print(f"  {variant}: {res[variant]['what']}; tokens per step {res[variant]['tokens_per_step']}")
    if not res:
        return
    first = next(iter(res.values()))
    print(f"device {first['device']}, max_length {first['max_length']}\n")
    cuda = first["cuda_peak_mb"] is not None
    head = (f"{'variant':11} {'s/step (median)':>16} {'tokens/s':>10} {'RSS loaded MB':>14} {'peak RSS MB':>12} "
            f"{'training +MB':>13}")
    print(head + (f" {'CUDA peak MB':>13}" if cuda else ""))
    for v, r in res.items():
        line = (f"{v:11} {r['s_per_step']:16.3f} {r['tokens_per_s']:10.1f} {r['rss_loaded_mb']:14.0f} "
                f"{r['rss_peak_mb']:12.0f} {r['rss_peak_mb'] - r['rss_loaded_mb']:13.0f}")
        print(line + (f" {r['cuda_peak_mb']:13.0f}" if cuda else ""))
    for a, b in (("ours_fused", "ours"), ("ours_cached", "ours_fused")):
        if a in res and b in res:
            x, y = res[a], res[b]
            print(f"{a} / {b}: s/step {x['s_per_step'] / y['s_per_step']:.2f}x, peak RSS "
                  f"{x['rss_peak_mb'] / y['rss_peak_mb']:.2f}x, training-only RSS increase "
                  f"{(x['rss_peak_mb'] - x['rss_loaded_mb']) / max(y['rss_peak_mb'] - y['rss_loaded_mb'], 1e-9):.2f}x"
                  + (f", CUDA peak {x['cuda_peak_mb'] / y['cuda_peak_mb']:.2f}x" if cuda else ""))
    if "ours" in res and "trl_gkd" in res:
        o, t = res["ours"], res["trl_gkd"]
        if o["tokens_per_step"] != t["tokens_per_step"]:
            print("\nwarning: the variants processed different token counts per step")
        speed = o["tokens_per_s"] / t["tokens_per_s"]
        mem = o["rss_peak_mb"] / t["rss_peak_mb"]
        train_mem = (o["rss_peak_mb"] - o["rss_loaded_mb"]) / max(t["rss_peak_mb"] - t["rss_loaded_mb"], 1e-9)
        print(f"\nours / trl_gkd: speed {speed:.2f}x (tokens/s; goal >= 1), peak RSS {mem:.2f}x (goal <= 1), "
              f"training-only RSS increase {train_mem:.2f}x"
              + (f", CUDA peak {o['cuda_peak_mb'] / t['cuda_peak_mb']:.2f}x" if cuda else ""))
        print(f"goal {'met' if speed >= 1 and mem <= 1 else 'not met'}")


if __name__ == "__main__":
    main()
