"""Supervised fine-tuning of the initial student on the teacher's answers (sequence-level KD): the
first step of DistiLLM-2's recipe, before the student's own answers become the rejected side.

The examples are TRL's prompt-completion format: the prompt is the user prompt formatted exactly as
the student sees it at generation time (``format_prompt`` without the teacher-only system prompt),
the completion the teacher's answer. ``SFTTrainer`` appends the tokenizer's EOS to each completion,
so the student learns to stop, and puts the loss on completion tokens only. Only answers in the
answer format are kept (``fsku.scoring.format_problem``), and the prompts that ``pairs`` holds out
as test pairs are left out so those stay unseen; their in-format answers measure the loss before
and after training. A second phase (``sft.choices``, ``fsku.distill.choices``) then teaches the
teacher's option distribution on every training multiple-choice question, on the same adapter. A LoRA
adapter is merged into the model before saving: the out is a plain model.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fsku.config import ConfigError, field
from fsku.distill.choices import ChoiceParams, agreement, build_choice_trainer, choice_examples
from fsku.distill.config import LoraParams
from fsku.distill.pairs import PairsConfig, is_test
from fsku.gen.format import format_prompt
from fsku.io import atomic_dir, read_jsonl, save_tokenizer, write_json
from fsku.kernels import use_bf16
from fsku.scoring import format_problem

log = logging.getLogger(__name__)


def _full_finetuning() -> LoraParams:
    return LoraParams(enabled=False)


@dataclass
class SftConfig:
    """``params.yaml`` section ``sft``; names follow TRL's ``SFTConfig`` where it has them."""
    steps: int = field(8, ge=0, doc="optimizer steps; 0 passes the student through unchanged")
    learning_rate: float = field(3e-4, gt=0.0, le=1.0)
    lr_scheduler_type: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "cosine"
    warmup_ratio: float = field(0.0, ge=0.0, lt=1.0)
    weight_decay: float = field(0.0, ge=0.0)
    max_grad_norm: float = field(1.0, gt=0.0)
    max_length: int = field(1024, ge=16, doc="prompt + answer + EOS tokens; longer examples are dropped")
    per_device_train_batch_size: int = field(2, ge=1)
    gradient_accumulation_steps: int = field(1, ge=1)
    seed: int = 0
    gradient_checkpointing: bool = field(False, doc="recompute activations (less memory, ~20% slower)")
    bf16: Literal["auto", True, False] = field(
        "auto", doc="bf16 autocast over float32 weights; auto: on a GPU or a CPU with AMX/AVX512-BF16 (fsku.kernels)")
    require_format: bool = field(True, doc="keep only answers in the answer format (format_problem)")
    lora: LoraParams = field(default_factory=_full_finetuning)
    choices: ChoiceParams = field(default_factory=ChoiceParams)

    def validate(self) -> None:
        if self.lora.enabled and not self.lora.target_modules:
            raise ConfigError("lora.target_modules: empty; name the modules LoRA adapts")


def select_examples(teacher: list[dict], n_options: dict[str, int], pairs_cfg: PairsConfig, tokenizer,
                    require_format: bool = True, questions: dict[str, str] | None = None
                    ) -> tuple[list[dict], list[dict], Counter]:
    """(train, held_out, dropped by reason): teacher answers as {"prompt", "completion"} examples.
    held_out holds the usable answers to the prompts that ``pairs`` keeps as test pairs; out-of-format
    answers (by ``format_problem``'s reason; with ``questions``, a prompt id's question, an open
    answer that echoes it or is too short to explain anything too) and those to test prompts never
    reach train: a student taught on echoes learns to echo."""
    questions = questions or {}
    train, held_out, dropped = [], [], Counter()
    for rec in teacher:
        text = rec["text"].strip()
        problem = None
        if require_format:
            problem = format_problem(text, rec["type"], n_options.get(rec["prompt_id"], 0),
                                     questions.get(rec["prompt_id"]))
        elif not text:
            problem = "empty"
        if problem:
            dropped[f"format_{problem}"] += 1
            continue
        example = {"prompt_id": rec["prompt_id"], "prompt": format_prompt(tokenizer, rec["prompt"]),
                   "completion": text}
        if is_test(rec["prompt_id"], pairs_cfg):
            dropped["test_prompt"] += 1
            held_out.append(example)
        else:
            train.append(example)
    return train, held_out, dropped


def drop_too_long(examples: list[dict], tokenizer, max_length: int, dropped: Counter | None) -> list[dict]:
    """Examples whose prompt + answer + EOS fit in ``max_length`` tokens (a cut answer would teach the
    student to stop nowhere)."""
    kept = []
    for e in examples:
        n = len(tokenizer(e["prompt"] + e["completion"] + tokenizer.eos_token).input_ids)
        if n <= max_length:
            kept.append(e)
        elif dropped is not None:
            dropped["too_long"] += 1
    return kept


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def completion_loss(model, tokenizer, examples: list[dict]) -> float | None:
    """Mean negative log-likelihood per completion token (answer + EOS) given the prompt, tokenised as
    TRL does (the completion starts where prompt and prompt + completion tokens diverge). Only the
    completion's logits are computed (``logits_to_keep``): the 262k-token vocabulary makes the
    prompt's logits the bulk of the cost. None without examples."""
    import torch

    if not examples:
        return None
    total, count = 0.0, 0
    device = next(model.parameters()).device
    with torch.no_grad():
        for e in examples:
            prompt = tokenizer(e["prompt"]).input_ids
            full = tokenizer(e["prompt"] + e["completion"] + tokenizer.eos_token).input_ids
            start = max(_common_prefix(prompt, full), 1)
            logits = model(input_ids=torch.tensor([full], device=device), use_cache=False,
                           logits_to_keep=len(full) - start + 1).logits[0, :-1].float()
            total += float(torch.nn.functional.cross_entropy(logits, torch.tensor(full[start:], device=device),
                                                             reduction="sum"))
            count += len(full) - start
    return total / count


def pass_through(student_dir: str | Path, out_dir: str | Path) -> None:
    """``sft.steps: 0``: the initial student, its files copied byte for byte."""
    with atomic_dir(out_dir) as tmp:
        shutil.copytree(student_dir, tmp, dirs_exist_ok=True)


def build_trainer(cfg: SftConfig, model, tokenizer, train: list[dict], output_dir: str):
    """TRL's SFTTrainer on prompt-completion examples: completion-only loss, EOS appended by TRL."""
    import datasets
    import torch
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    datasets.disable_progress_bars()
    args = SFTConfig(
        output_dir=output_dir, max_steps=cfg.steps, per_device_train_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps, learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler_type, warmup_steps=cfg.warmup_ratio, weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm, max_length=cfg.max_length, completion_only_loss=True, packing=False,
        seed=cfg.seed, data_seed=cfg.seed, bf16=use_bf16(cfg.bf16, torch.cuda.is_available(), "sft.bf16"), fp16=False,
        use_cpu=not torch.cuda.is_available(),
        gradient_checkpointing=cfg.gradient_checkpointing, save_strategy="no", logging_steps=1, report_to="none",
        disable_tqdm=True, dataloader_num_workers=0, eval_strategy="no",
    )
    peft_config = None
    if cfg.lora.enabled:
        peft_config = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                                 target_modules=list(cfg.lora.target_modules), task_type="CAUSAL_LM")
    cols = ("prompt", "completion")
    as_ds = lambda rows: datasets.Dataset.from_list([{k: e[k] for k in cols} for e in rows])  # noqa: E731
    return SFTTrainer(model=model, args=args, train_dataset=as_ds(train), processing_class=tokenizer,
                      peft_config=peft_config)


@contextlib.contextmanager
def score_completions_only(enabled: bool = True):
    """Make TRL's fused LM head score only the positions that carry a label on CPU too.

    TRL (1.16) patches the model so the loss never materialises the full logits; on CUDA/XPU it then
    projects only the labelled positions through the LM head, elsewhere every position (fixed tile
    shapes for compilers such as Neuron's). With prompt labels -100 and a 262k-token vocabulary, the
    prompt's positions are most of a CPU step's work for nothing: the loss and its gradient are the
    same (masked positions add zero; tested). Only that choice is switched; the kernels stay TRL's."""
    try:
        import trl.trainer.utils as trl_utils
    except ImportError:  # pragma: no cover
        yield
        return
    original = getattr(trl_utils, "_use_triton", None)
    if not enabled or original is None:
        yield
        return
    trl_utils._use_triton = lambda device: device.type == "cpu" or original(device)
    try:
        yield
    finally:
        trl_utils._use_triton = original


def run_sft(cfg: SftConfig, pairs_cfg: PairsConfig, teacher_file: Path, prompts_file: Path, student_dir: str,
            out_dir: Path, metrics_file: Path, choices_file: Path | None = None) -> dict:
    """Train (or pass through), write ``out_dir`` (a plain model + tokenizer) and the metrics.
    ``choices_file``: the ``teacher_choices`` stage's out, for the second phase (``sft.choices``)."""
    start = time.perf_counter()
    with_choices = choices_file is not None and cfg.choices.num_train_epochs > 0
    if cfg.steps == 0 and not with_choices:
        pass_through(student_dir, out_dir)
        summary = {"steps": 0, "passed_through": True, "seconds": round(time.perf_counter() - start, 1)}
        write_json(metrics_file, summary)
        return summary

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(cfg.seed)
    tokenizer = AutoTokenizer.from_pretrained(student_dir)
    train, held_out, dropped, teacher = [], [], Counter(), []
    if cfg.steps:
        prompts = read_jsonl(prompts_file)
        n_options = {p["prompt_id"]: int(p.get("n_options") or 0) for p in prompts}
        questions = {p["prompt_id"]: p["question"] for p in prompts if p.get("type") == "open" and p.get("question")}
        teacher = read_jsonl(teacher_file)
        train, held_out, dropped = select_examples(teacher, n_options, pairs_cfg, tokenizer, cfg.require_format,
                                                   questions)
        train = drop_too_long(train, tokenizer, cfg.max_length, dropped)
        held_out = drop_too_long(held_out, tokenizer, cfg.max_length, None)
        if len(train) < 2:
            raise ValueError(f"{teacher_file}: {len(train)} usable teacher answer(s) for sft (dropped: "
                             f"{dict(sorted(dropped.items())) or 'none'}); it needs at least 2. Check the teacher's "
                             "answers (metrics/generation.json), or set sft.steps: 0 to pass the student through")
    choice_train, choice_held = [], []
    if with_choices:
        choice_train, choice_held = choice_examples(read_jsonl(choices_file), tokenizer, pairs_cfg,
                                                    cfg.choices.temperature, cfg.choices.option_rotations, cfg.seed)
        if len(choice_train) < 2:
            raise ValueError(f"{choices_file}: {len(choice_train)} training question(s) for sft.choices; it needs "
                             "at least 2 (rerun the teacher_choices stage with sft.choices.num_train_epochs above 0, "
                             "or set it to 0)")
    # the out is kept (and answers) in the student's own stored dtype
    keep = AutoConfig.from_pretrained(student_dir).dtype or torch.float32
    model = AutoModelForCausalLM.from_pretrained(student_dir, dtype=torch.float32)
    use_cache = model.config.use_cache  # training switches the KV cache off; the out keeps the input's
    before = completion_loss(model.eval(), tokenizer, held_out)
    choices_before = agreement(model, choice_held) if with_choices else None
    bf16 = use_bf16(cfg.bf16, torch.cuda.is_available(), "sft.bf16")
    losses, choice_losses, steps = [], [], 0
    with tempfile.TemporaryDirectory(prefix="sft-") as tmp:
        if cfg.steps:
            trainer = build_trainer(cfg, model, tokenizer, train, tmp)
            with score_completions_only():
                trainer.train()
            model = trainer.model
            losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
            steps = trainer.state.global_step
        if with_choices:
            if cfg.lora.enabled and not cfg.steps:  # no adapter from the first phase: a fresh one
                from peft import LoraConfig, get_peft_model

                model = get_peft_model(model, LoraConfig(
                    r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                    target_modules=list(cfg.lora.target_modules), task_type="CAUSAL_LM"))
            log.info("sft: choice distillation on %d questions as %d examples (%d held out), %.3g epochs",
                     len({e["prompt_id"] for e in choice_train}), len(choice_train), len(choice_held),
                     cfg.choices.num_train_epochs)
            ct = build_choice_trainer(cfg.choices, model, tokenizer, choice_train, tmp, cfg.seed, bf16,
                                      cfg.lr_scheduler_type, cfg.max_grad_norm, cfg.warmup_ratio, cfg.weight_decay)
            ct.train()
            model = ct.model
            choice_losses = [e["loss"] for e in ct.state.log_history if "loss" in e]
    trained = model
    if cfg.lora.enabled:
        trained = trained.merge_and_unload()
    after = completion_loss(trained.eval(), tokenizer, held_out)
    choices_after = agreement(trained, choice_held) if with_choices else None
    trained.config.use_cache = use_cache
    with atomic_dir(out_dir) as tmp:
        trained.eval().to(keep).save_pretrained(str(tmp))
        save_tokenizer(tokenizer, tmp)
    r4 = lambda x: None if x is None else round(float(x), 4)  # noqa: E731
    summary = {
        "steps": steps, "lora": cfg.lora.enabled,
        "examples": len(train), "held_out_examples": len(held_out), "teacher_answers": len(teacher),
        "dropped": dict(sorted(dropped.items())),
        "loss_first": r4(losses[0]) if losses else None, "loss_last": r4(losses[-1]) if losses else None,
        "held_out_loss_before": r4(before), "held_out_loss_after": r4(after),
    }
    if with_choices:  # agreement with the teacher's pick, and KL over the options, on held-out questions
        n = max(1, len(choice_losses) // 4)
        summary["choices"] = {
            "questions": len({e["prompt_id"] for e in choice_train}), "examples": len(choice_train),
            "steps": len(choice_losses),
            "loss_first": r4(sum(choice_losses[:n]) / n), "loss_last": r4(sum(choice_losses[-n:]) / n),
            "held_out_before": choices_before, "held_out_after": choices_after}
    summary["seconds"] = round(time.perf_counter() - start, 1)
    write_json(metrics_file, summary)
    return summary
