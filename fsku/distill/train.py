"""Run a distillation: pairs + teacher + initial student -> trained student (LoRA adapter or full
model), with resumable checkpoints, a dvclive log and before/after quality figures.

Checkpoints live outside the stage's outs (``data/distill_ckpt``) with a fingerprint of everything
that determines the result; a rerun after a kill resumes from the newest matching checkpoint (model,
optimizer, scheduler, RNG and data position restored), so its out equals an uninterrupted run's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import torch

from fsku.config import ConfigError
from fsku.distill.config import TrainConfig
from fsku.distill.examples import check_examples, load_examples
from fsku.distill.quality import answer_quality
from fsku.io import atomic_dir, cached_tokenizer, save_tokenizer, write_json
from fsku.kernels import use_bf16
from fsku.models.compat import TokenizerMismatch, check_and_align, same_vocab
from fsku.models.fingerprint import model_fingerprint

log = logging.getLogger(__name__)

# log_history keys about the trainer session (timings, and a loss averaged over the steps since the
# last resume), not the run: left out of the dvclive log so a resumed run logs what an uninterrupted one does
SESSION_KEYS = {"train_runtime", "train_samples_per_second", "train_steps_per_second", "total_flos", "train_loss"}


def check_method(cfg: TrainConfig, cross: bool) -> None:
    """Stop before anything runs when the method cannot use these tokenizers or would drop a setting."""
    if cross and cfg.method != "gold":
        raise TokenizerMismatch(f"train.method: {cfg.method} compares teacher and student token by token, but "
                                "their tokenizers differ; use train.method gold (ULD) or a student of the "
                                "teacher's family")
    if cross and not cfg.gold.use_uld_loss:
        raise ConfigError("train.gold.use_uld_loss: false, but the teacher and student tokenizers differ; only "
                          "ULD distills across tokenizers")
    if cfg.method == "gold" and not cross and cfg.teacher_system:
        raise ConfigError("train.teacher_system: method gold with one shared tokenizer gives the teacher the "
                          "student's very input and would ignore it; use train.method gkd")


def fingerprint(cfg: TrainConfig, files: list[Path], models: list[str]) -> str:
    h = hashlib.sha256(json.dumps(asdict(cfg), sort_keys=True).encode())
    for f in files:
        h.update(f.read_bytes())
    for m in models:
        h.update(model_fingerprint(m).encode())
    return h.hexdigest()[:16]


def last_checkpoint(ckpt_dir: Path, fp: str, manage: bool = True) -> str | None:
    """The newest complete checkpoint of this exact run. The managing process (rank 0) removes the
    checkpoints of any other run and marks the folder with this run's fingerprint; other ranks only
    read, and reach the same answer."""
    marker = ckpt_dir / "fingerprint"
    matches = marker.exists() and marker.read_text() == fp
    if not manage:
        if not matches:
            return None
    else:
        if ckpt_dir.exists() and not matches:
            shutil.rmtree(ckpt_dir)
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        marker.write_text(fp)
    done = [p for p in ckpt_dir.glob("checkpoint-*") if (p / "trainer_state.json").exists()]
    return str(max(done, key=lambda p: int(p.name.split("-")[1]))) if done else None


def write_dvclive(log_dir: Path, history: list[dict]) -> None:
    """The training curves in dvclive's layout (``plots/metrics/<train|eval>/<name>.tsv`` with
    ``step<TAB>name`` rows, and ``metrics.json`` with the last values), rebuilt from the trainer's log
    history so a resumed run writes exactly what an uninterrupted one does. Written directly rather
    than through ``dvclive.Live``, which ties itself to the repository's git and DVC state: it fails
    in a repository without commits and, under ``dvc exp run``, tracks its folder itself, which
    clashes with the stage's declared outs."""
    curves: dict[str, list[tuple[int, float]]] = {}
    for entry in history:
        if "step" not in entry:
            continue
        prefix = "eval" if any(k.startswith("eval_") for k in entry) else "train"
        for key, value in entry.items():
            if key in SESSION_KEYS or key in ("step", "epoch") or not isinstance(value, (int, float)):
                continue
            curves.setdefault(f"{prefix}/{key.removeprefix('eval_')}", []).append((entry["step"], value))
    summary: dict = {}
    with atomic_dir(log_dir) as tmp:
        for name, rows in sorted(curves.items()):
            prefix, key = name.split("/")
            path = Path(tmp) / "plots" / "metrics" / prefix / f"{key}.tsv"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"step\t{key}\n" + "".join(f"{step}\t{round(float(v), 6)}\n" for step, v in rows))
            summary.setdefault(prefix, {})[key] = round(float(rows[-1][1]), 6)
        summary["step"] = max((e["step"] for e in history if "step" in e), default=0)
        write_json(Path(tmp) / "metrics.json", summary)


def normalise_adapter_config(path: Path) -> None:
    """PEFT keeps target_modules as a set, so its saved order follows the hash seed: sort it, so the
    out is byte-identical across runs."""
    if not path.exists():
        return
    cfg = json.loads(path.read_text())
    if isinstance(cfg.get("target_modules"), list):
        cfg["target_modules"] = sorted(cfg["target_modules"])
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def peak_memory_mb() -> float:
    """Peak accelerator memory allocated by torch, or on CPU the process's peak resident set."""
    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def measure_before(trainer, teacher, test: list[dict], tokenizer, cfg: TrainConfig, quality_tok) -> dict | None:
    """The student's distance to the teacher before training, where training runs: once (the main
    process; other ranks skip it), on the trainer's device, ``cfg.batch_size`` answers a pass. The
    trainer has placed the student (LoRA adapters at zero: the student as loaded) and the teacher."""
    if not trainer.accelerator.is_main_process:
        return None
    device = trainer.accelerator.device
    student = trainer.accelerator.unwrap_model(trainer.model)
    was_training = student.training
    student.eval()
    teacher.to(device)  # in place: the module the trainer holds
    started = time.perf_counter()
    before = answer_quality(student, teacher, test, tokenizer, cfg.max_length, cfg.loss_chunk, quality_tok,
                            batch_size=cfg.batch_size)
    log.info("before training: KL %s on %d test answer tokens, on %s in %.1f s", before["kl"], before["tokens"],
             device, time.perf_counter() - started)
    student.train(was_training)
    return before


def trainer_args(cfg: TrainConfig, output_dir: str) -> dict:
    """The ``transformers.TrainingArguments`` fields of a distillation run, from ``TrainConfig`` (the one
    place that maps its names to the trainer's: DPOConfig, GKDConfig and GOLDConfig take them all)."""
    return dict(
        output_dir=output_dir, per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum, learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler, warmup_steps=cfg.warmup_ratio, weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm, num_train_epochs=cfg.epochs, max_steps=cfg.max_steps,
        save_strategy="steps", save_steps=cfg.save_steps, save_total_limit=2, logging_steps=cfg.logging_steps,
        seed=cfg.seed, data_seed=cfg.seed, bf16=use_bf16(cfg.bf16, torch.cuda.is_available(), "train.bf16"), fp16=False,
        use_cpu=not torch.cuda.is_available(),
        gradient_checkpointing=cfg.gradient_checkpointing,
        report_to="none", disable_tqdm=True, dataloader_num_workers=0, eval_strategy="no",
    )


def run_distill(cfg: TrainConfig, pairs_dir: Path, teacher_dir: str, student_dir: str, out_dir: Path,
                ckpt_dir: Path, log_dir: Path, metrics_file: Path, teacher_logits_dir: Path | None = None) -> dict:
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig

    from fsku.distill.trainer import DistillTrainer

    torch.manual_seed(cfg.seed)
    cache = None
    if cfg.teacher_logits == "cached":
        from fsku.distill.teacher_cache import TeacherCache

        if teacher_logits_dir is None:
            raise ValueError("train.teacher_logits: cached needs the teacher_logits stage's out (paths.teacher_logits)")
        cache = TeacherCache.load(teacher_logits_dir)
    tokenizer = cached_tokenizer(student_dir)
    teacher_tok = cached_tokenizer(teacher_dir)  # usually the same files: parsed once
    cross = not same_vocab(teacher_tok, tokenizer)
    check_method(cfg, cross)
    train = load_examples(pairs_dir / "train.jsonl", tokenizer, teacher_tok, cfg.teacher_system, cross)
    test = load_examples(pairs_dir / "test.jsonl", tokenizer, teacher_tok, cfg.teacher_system, cross)
    check_examples(train, tokenizer, cfg.max_length, f"{pairs_dir / 'train.jsonl'}")
    if not test:
        raise ValueError(f"{pairs_dir / 'test.jsonl'}: no test pairs to measure the student on; "
                         "raise pairs.test_fraction")
    cuda = torch.cuda.is_available()
    bf16 = use_bf16(cfg.bf16, cuda, "train.bf16")
    # the frozen teacher in bf16 when autocast computes in it anyway (half the memory, no casts); the
    # student keeps float32 master weights on a CPU (autocast), as mixed precision does
    dtype = torch.bfloat16 if bf16 else torch.float32
    student = AutoModelForCausalLM.from_pretrained(student_dir, dtype=dtype if cuda else torch.float32)
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir, dtype=dtype).eval()
    note = "tokenizers differ: GOLD aligns them by text (ULD)" if cross else check_and_align(
        teacher_tok, tokenizer, teacher, student)
    log.info(note)
    if "resized" in note and cfg.lora.enabled:  # the adapter would not load onto its saved base
        raise ValueError(f"{student_dir}: the student's embeddings are not the teacher's size ({note}); a LoRA "
                         "adapter over it would not load onto that base. student_model aligns them (run it, or "
                         "python -m stages.student_model), or set train.lora.enabled: false")
    for p in teacher.parameters():
        p.requires_grad_(False)
    if cache is not None:
        from fsku.distill.teacher_cache import sequences

        cache.check(sequences(tokenizer, train), str(pairs_dir / "train.jsonl"),
                    student.get_output_embeddings().weight.shape[0])

    fp = fingerprint(cfg, [pairs_dir / "train.jsonl", *([cache.path] if cache else [])], [teacher_dir, student_dir])
    resume = last_checkpoint(ckpt_dir, fp, manage=int(os.environ.get("RANK", "0")) == 0)
    quality_tok = teacher_tok if cross else None

    import datasets

    datasets.disable_progress_bars()
    cols = ("prompt", "chosen", "rejected")
    train_ds = datasets.Dataset.from_list([{k: e[k] for k in cols} for e in train])
    common = trainer_args(cfg, str(ckpt_dir))
    peft_config = None
    if cfg.lora.enabled:
        peft_config = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                                 target_modules=list(cfg.lora.target_modules), task_type="CAUSAL_LM")
    uld = None
    if cfg.method == "gkd":
        from fsku.distill.gkd import gkd_trainer

        trainer = gkd_trainer(cfg, common, student, teacher, tokenizer, train, peft_config)
    elif cfg.method == "gold":
        from fsku.distill.gold import gold_trainer, uld_mode

        uld = uld_mode(cfg, tokenizer, teacher_tok, cross)
        trainer = gold_trainer(cfg, common, student, teacher, tokenizer, teacher_dir, train, peft_config, uld)
    else:
        # cached: no reference model (LoRA disables its adapter for one, never asked here; full fine-tuning
        # makes TRL load a copy of the student as one)
        trainer = DistillTrainer(model=student, ref_model=None if cache else teacher,
                                 args=DPOConfig(**common, max_length=cfg.max_length), train_dataset=train_ds,
                                 processing_class=tokenizer, peft_config=peft_config, distill=cfg, teacher_cache=cache)
    before = measure_before(trainer, teacher, test, tokenizer, cfg, quality_tok)
    if cache is not None:  # trained without it; loaded again for the figures after training
        teacher.to("cpu")
        del teacher
        import gc

        gc.collect()
    if resume:
        log.info("resuming from %s", resume)
        if cfg.method == "distillm2":
            trainer.load_distill_state()
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume)
    train_s = time.perf_counter() - started

    summary = {}
    if trainer.accelerator.is_main_process:
        model = trainer.accelerator.unwrap_model(trainer.model).eval()
        if cache is not None:
            teacher = AutoModelForCausalLM.from_pretrained(teacher_dir, dtype=dtype).eval()
            teacher = teacher.to(trainer.accelerator.device)
        after = answer_quality(model, teacher, test, tokenizer, cfg.max_length, cfg.loss_chunk, quality_tok,
                               batch_size=cfg.batch_size)
        with atomic_dir(out_dir) as tmp:
            if cfg.lora.enabled:
                model.peft_config["default"].base_model_name_or_path = student_dir
            model.save_pretrained(str(tmp))
            save_tokenizer(tokenizer, tmp)
            normalise_adapter_config(Path(tmp) / "adapter_config.json")
        history = [e for e in trainer.state.log_history]
        write_dvclive(log_dir, history)
        losses = [e["loss"] for e in history if "loss" in e]
        last = next((e for e in reversed(history) if "loss" in e), {})
        final = {k: round(float(last[k]), 4) for k in ("loss_chosen", "loss_rejected", "kl_chosen", "kl_rejected",
                                                       "alpha1", "alpha2", "learning_rate") if k in last}
        loss = {"distillm2": cfg.loss, "gkd": "gkd_jsd", "gold": f"uld_{uld}" if uld else "gold_jsd"}[cfg.method]
        summary = {
            "method": cfg.method, "loss": loss, "beta": cfg.beta if cfg.method == "distillm2" else cfg.gkd.beta,
            "steps": trainer.state.global_step, "train_pairs": len(train),
            "test_pairs": len(test), "lora": cfg.lora.enabled,
            "resumed_from_step": int(resume.split("-")[-1]) if resume else 0,
            "train_loss_first": round(losses[0], 4) if losses else None,
            "train_loss_last": round(losses[-1], 4) if losses else None,
            "kl_before": before["kl"], "kl_after": after["kl"],
            "kl_drop": round(1 - after["kl"] / before["kl"], 4) if before["kl"] else None,  # None across tokenizers
            "ppl_before": before["student_ppl"], "ppl_after": after["student_ppl"],
            "teacher_ppl": before["teacher_ppl"], "test_answer_tokens": before["tokens"],
            "last_step": final, "teacher_logits": cfg.teacher_logits if cfg.method == "distillm2" else "online",
            # cost (timings: metrics no stage reads): this session's training, the process's peak memory
            "train_s": round(train_s, 1), "peak_memory_mb": peak_memory_mb(),
        }
        write_json(metrics_file, summary)
        shutil.rmtree(ckpt_dir, ignore_errors=True)  # done: the out is written
    return summary
