"""On-policy distillation across tokenizers (GOLD, Patiño et al. 2025) through TRL's ``GOLDTrainer``.

GOLD is GKD (``train.gkd``: a share ``lmbda`` of steps on the student's own samples, generalised JSD
``beta``) that also works when teacher and student tokenize differently: Universal Logit
Distillation (ULD) re-tokenizes each prompt and answer with the teacher's tokenizer and compares the
two models' answer distributions by text, merging split tokens by byte offsets where both
tokenizers are byte-level BPE (extended ULD) and by position in sorted probability otherwise. With
one shared tokenizer it is GKD's token-level JSD.

One method is replaced, ``compute_loss``: across tokenizers the teacher reads its own prompt (its own
chat template, and ``teacher_system`` if set) instead of the student's prompt text, which upstream
hands it verbatim: a Qwen teacher would otherwise read a Gemma prompt.
"""

from __future__ import annotations

from trl.experimental.gold import GOLDConfig, GOLDTrainer
from trl.experimental.utils import is_byte_level_tokenizer

from fsku.gen.format import adds_bos


def gold_examples(examples: list[dict], tokenizer, max_length: int) -> list[dict]:
    """``{"prompt", "completion"}`` rows for ``GOLDTrainer``. It tokenizes prompt + completion without
    special tokens, so the BOS the student reads at inference is written into the prompt text; the
    answer is cut so that prompt, answer and EOS fit ``max_length`` (upstream would cut the prompt's
    start instead)."""
    bos = tokenizer.bos_token if adds_bos(tokenizer) else ""
    rows = []
    for ex in examples:
        prompt = bos + ex["prompt"]
        room = max_length - 1 - len(tokenizer(prompt, add_special_tokens=False).input_ids)
        answer = tokenizer(ex["chosen"], add_special_tokens=False).input_ids
        cut = answer[:max(room, 1)]
        rows.append({"prompt": prompt, "completion": ex["chosen"] if cut == answer else tokenizer.decode(cut)})
    return rows


def teacher_prompts(examples: list[dict], rows: list[dict], tokenizer) -> dict[str, str]:
    """{the student's prompt text, as the trainer hands it over: the dataset's, and decoded from its
    tokens on on-policy steps: the teacher's prompt text}."""
    out = {}
    for ex, row in zip(examples, rows):
        ids = tokenizer(row["prompt"], add_special_tokens=False).input_ids
        decoded = tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        out[row["prompt"]] = out[decoded] = ex.get("teacher_prompt", ex["prompt"])
    return out


class TeacherPromptGOLDTrainer(GOLDTrainer):
    """``GOLDTrainer`` whose teacher, across tokenizers, reads its own prompt."""

    def __init__(self, *args, teacher_prompts: dict[str, str], **kwargs):
        super().__init__(*args, **kwargs)
        self.teacher_prompts = teacher_prompts

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.use_uld_loss and self.teacher_tokenizer is not None:
            missing = [p for p in inputs["original_prompt_text"] if p not in self.teacher_prompts]
            if missing:
                raise KeyError(f"no teacher prompt for the student prompt {missing[0][:200]!r}")
            teacher_side = [self.teacher_prompts[p] for p in inputs["original_prompt_text"]]
            inputs = {**inputs, "original_prompt_text": teacher_side}
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


def uld_mode(cfg, tokenizer, teacher_tokenizer, cross: bool) -> str | None:
    """None (one tokenizer: token-level JSD), "extended" or "positional" ULD."""
    if not cross:
        return None
    byte_level = all(is_byte_level_tokenizer(t.backend_tokenizer) for t in (tokenizer, teacher_tokenizer))
    return "extended" if cfg.gold.use_extended_uld and byte_level else "positional"


def gold_trainer(cfg, common: dict, student, teacher, tokenizer, teacher_dir: str, train: list[dict], peft_config,
                 uld: str | None):
    """The trainer for ``train.method: gold``: ``common`` holds the TrainingArguments all methods share;
    ``uld`` from ``uld_mode``."""
    import datasets

    g, o = cfg.gold, cfg.gkd
    args = GOLDConfig(**common, max_length=cfg.max_length, lmbda=o.lmbda, beta=o.beta, temperature=o.temperature,
                      max_completion_length=o.max_new_tokens, seq_kd=o.seq_kd, disable_dropout=True,
                      use_uld_loss=uld is not None, use_extended_uld=uld == "extended",
                      teacher_tokenizer_name_or_path=teacher_dir if uld else None,
                      uld_use_hybrid_loss=g.uld_use_hybrid_loss,
                      uld_crossentropy_weight=g.uld_crossentropy_weight,
                      uld_distillation_weight=g.uld_distillation_weight, dataset_num_proc=None)
    rows = gold_examples(train, tokenizer, cfg.max_length)
    return TeacherPromptGOLDTrainer(model=student, teacher_model=teacher, args=args,
                                    train_dataset=datasets.Dataset.from_list(rows), processing_class=tokenizer,
                                    peft_config=peft_config, teacher_prompts=teacher_prompts(train, rows, tokenizer))
