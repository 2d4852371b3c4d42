"""The distill and merge stages on tiny random-init models (real TRL, PEFT, accelerate, dvclive):
training to the end, resume after a real kill, DDP over gloo, merge, and errors before training."""

import json
import os
import re
import subprocess
import sys

import pytest
import torch
import yaml

from fsku.models.load import save_model

from conftest import ROOT, run, tiny_gemma, tiny_qwen2

QUESTIONS = ["접근매체를 분실한 경우 이용자가 할 일은?", "전자서명 인증서의 유효기간은?", "망분리 예외 대상은?",
             "클라우드 이용 시 중요도 평가 항목은?", "이상거래탐지시스템의 탐지 규칙 점검 주기는?",
             "침해사고 보고 기한은?", "일회용 비밀번호 발생기의 보안 등급은?", "암호키 폐기 절차는?"]


def pair(i, q):
    user = {"role": "user", "content": f"다음 질문에 답하세요.\n\n{q}"}
    return {"prompt_id": f"p{i}", "question_id": f"Q{i}",
            "chosen": [user, {"role": "assistant", "content": f"정답: {i % 4 + 1}. 관련 규정에 따라 즉시 조치한다."}],
            "rejected": [user, {"role": "assistant", "content": f"잘 모르겠습니다 {i} 아마도 그렇다"}]}


@pytest.fixture(scope="module")
def work(tmp_path_factory, gemma_tokenizer, qwen_tokenizer):
    d = tmp_path_factory.mktemp("distill")
    save_model(tiny_gemma(layers=3, seed=1), gemma_tokenizer, d / "teacher")
    save_model(tiny_gemma(layers=2, seed=2), gemma_tokenizer, d / "student")
    save_model(tiny_qwen2(layers=2, seed=3), qwen_tokenizer, d / "qwen_teacher")  # another tokenizer family
    (d / "pairs").mkdir()
    rows = [pair(i, q) for i, q in enumerate(QUESTIONS)]
    for name, part in (("train", rows[:6]), ("test", rows[6:])):
        (d / "pairs" / f"{name}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part))
    return d


def params(d, name, **train):
    # the fused loss here (resume, DDP, adaptive skews through it); the pipeline test runs params.yaml's.
    # float32 (not auto): the same arithmetic on a CPU with bf16 in hardware and on one without
    base = {"bf16": False, "max_steps": 6, "save_steps": 2, "batch_size": 2, "learning_rate": 0.05, "warmup_ratio": 0.0,
            "adaptive_alpha": True, "warm_start_steps": 2, "fused_loss": True, "lora": {"r": 4, "alpha": 8}}
    (d / f"{name}.yaml").write_text(yaml.safe_dump({"train": {**base, **train}}))
    return d / f"{name}.yaml"


def distill_cmd(d, name):
    extra = {"num_processes": 2, "batch_size": 1} if name == "ddp" else {}
    return ["-m", "stages.distill", "--params", str(params(d, name, **extra)), "--pairs", str(d / "pairs"),
            "--teacher", str(d / "teacher"), "--student", str(d / "student"), "--out", str(d / name / "model"),
            "--checkpoints", str(d / name / "ckpt"), "--log-dir", str(d / name / "log"),
            "--metrics", str(d / name / "distill.json")]


def files(path):
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained(work):
    run([sys.executable, *distill_cmd(work, "a")], cwd=ROOT)
    return work / "a"


def test_trains_to_the_end_and_logs(trained):
    m = json.loads((trained / "distill.json").read_text())
    assert m["steps"] == 6 and m["train_pairs"] == 6 and m["test_pairs"] == 2 and m["resumed_from_step"] == 0
    assert m["method"] == "distillm2" and m["train_s"] > 0 and m["peak_memory_mb"] > 100  # two models loaded
    assert m["kl_after"] < m["kl_before"]
    # the student's perplexity on the teacher's answers moves toward the teacher's own (random-init
    # models: near the vocabulary size, so it may rise)
    assert abs(m["ppl_after"] - m["teacher_ppl"]) < abs(m["ppl_before"] - m["teacher_ppl"])
    assert set(m["last_step"]) == {"loss_chosen", "loss_rejected", "kl_chosen", "kl_rejected", "alpha1", "alpha2",
                                   "learning_rate"}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json"} <= set(files(trained / "model"))
    cfg = json.loads((trained / "model" / "adapter_config.json").read_text())
    assert cfg["r"] == 4 and cfg["base_model_name_or_path"].endswith("student")
    curves = trained / "log" / "plots" / "metrics" / "train"
    for key in ("loss", "loss_chosen", "loss_rejected", "kl_chosen", "kl_rejected", "alpha1", "alpha2",
                "learning_rate"):
        rows = (curves / f"{key}.tsv").read_text().splitlines()
        assert rows[0] == f"step\t{key}" and len(rows) == 7, key
    warm = [float(r.split("\t")[1]) for r in (curves / "warm_start.tsv").read_text().splitlines()[1:]]
    assert warm == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]  # the first 2 steps on the warm-start loss (fkl: no skew)
    alphas = [float(r.split("\t")[1]) for r in (curves / "alpha1.tsv").read_text().splitlines()[1:]]
    assert alphas[:2] == [0.0, 0.0] and all(0.01 - 1e-6 <= a <= 0.1 + 1e-6 for a in alphas[2:])  # adaptive
    assert not (trained / "ckpt").exists()  # checkpoints are cleared once the out is written


def test_merge_matches_the_adapter(work, trained):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run([sys.executable, "-m", "stages.merge", "--model", str(trained / "model"), "--out", str(work / "merged")],
        cwd=ROOT)
    assert not (work / "merged" / "adapter_config.json").exists()
    x = torch.randint(0, 1000, (2, 12))
    adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(work / "student")),
                                        str(trained / "model")).eval()
    merged = AutoModelForCausalLM.from_pretrained(str(work / "merged")).eval()
    base = AutoModelForCausalLM.from_pretrained(str(work / "student")).eval()
    with torch.no_grad():
        a, m, b = adapter(x).logits, merged(x).logits, base(x).logits
    assert torch.allclose(a, m, atol=1e-4) and not torch.allclose(a, b, atol=1e-3)
    # a full model passes through unchanged
    run([sys.executable, "-m", "stages.merge", "--model", str(work / "student"), "--out", str(work / "full")],
        cwd=ROOT)
    assert files(work / "full") == files(work / "student")


def test_ddp_two_cpu_processes(work):
    """train.num_processes: 2 makes the stage relaunch itself under accelerate launch (DDP over gloo)."""
    proc = run([sys.executable, *distill_cmd(work, "ddp")], cwd=ROOT, env={"PYTHONPATH": str(ROOT)})
    m = json.loads((work / "ddp" / "distill.json").read_text())
    assert m["steps"] == 6 and m["kl_after"] < m["kl_before"] and m["train_pairs"] == 6
    # the "before" figures are measured once (rank 0), where the trainer put the models
    assert proc.stderr.count("before training: KL") == 1
    assert re.search(r"before training: .* on cpu(:0)? in", proc.stderr)


def test_answer_quality_batched_is_the_unbatched(gemma_tokenizer):
    """Left-padded batches of answers give the per-answer figures of one answer at a time, with a
    teacher prompt of another length (its own system prompt) as well."""
    from fsku.distill.quality import answer_quality

    student, teacher = tiny_gemma(layers=1, seed=1).eval(), tiny_gemma(layers=2, seed=2).eval()
    examples = [{"prompt": "질문 " * (3 + 5 * i), "chosen": "답변 " * (2 + 3 * (i % 3)),
                 **({"teacher_prompt": "지시 " * 4 + "질문 " * (3 + 5 * i)} if i % 2 else {})} for i in range(5)]
    one = answer_quality(student, teacher, examples, gemma_tokenizer, 512, chunk=4)
    for size in (2, 5):
        batched = answer_quality(student, teacher, examples, gemma_tokenizer, 512, chunk=4, batch_size=size)
        assert batched["tokens"] == one["tokens"]
        for k in ("kl", "student_ppl", "teacher_ppl"):
            assert batched[k] == pytest.approx(one[k], rel=1e-3), k
    cross = answer_quality(student, teacher, examples, gemma_tokenizer, 512, teacher_tokenizer=gemma_tokenizer)
    cross_b = answer_quality(student, teacher, examples, gemma_tokenizer, 512, teacher_tokenizer=gemma_tokenizer,
                             batch_size=3)
    assert cross["kl"] is None and cross_b["student_ppl"] == pytest.approx(cross["student_ppl"], rel=1e-3)
    assert cross_b["teacher_ppl"] == pytest.approx(one["teacher_ppl"], rel=1e-3)


def test_teacher_states_stand_in_for_the_teacher(tmp_path, gemma_tokenizer):
    """The teacher's stored hidden states at the answer positions, with its LM head, give what the
    teacher itself gives (KL, perplexities, across tokenizers too), saved and loaded back; a stored
    set that lacks an answer says which, and the row then runs the teacher."""
    from fsku.distill.quality import (
        answer_quality,
        first_missing,
        load_teacher_states,
        save_teacher_states,
        teacher_states,
    )

    student, teacher = tiny_gemma(layers=1, seed=1).eval(), tiny_gemma(layers=2, seed=2).eval()
    examples = [{"prompt": "질문 " * (3 + 5 * i), "chosen": "답변 " * (2 + 3 * (i % 3)),
                 **({"teacher_prompt": "지시 " * 4 + "질문 " * (3 + 5 * i)} if i % 2 else {})} for i in range(5)]
    examples.append({"prompt": "질문 " * 40, "chosen": "잘린 답"})  # cut away whole at max_length 30: not measured
    states = teacher_states(teacher, examples, gemma_tokenizer, 30)
    assert len(states.ids) >= 5 and all(len(h) for h in states.hidden)  # its own cut may add sequences
    save_teacher_states(states, tmp_path / "s.safetensors")
    loaded = load_teacher_states(tmp_path / "s.safetensors", teacher)
    assert loaded.ids == states.ids and all(torch.equal(a, b) for a, b in zip(loaded.hidden, states.hidden))
    assert first_missing(loaded, examples, gemma_tokenizer, 30) is None
    for size in (1, 3):
        ref = answer_quality(student, teacher, examples, gemma_tokenizer, 30, chunk=4, batch_size=size)
        got = answer_quality(student, loaded, examples, gemma_tokenizer, 30, chunk=4, batch_size=size)
        assert got["tokens"] == ref["tokens"] > 0
        for k in ("kl", "student_ppl", "teacher_ppl"):
            assert got[k] == pytest.approx(ref[k], rel=1e-4, abs=1e-4), k
    cross = answer_quality(student, loaded, examples, gemma_tokenizer, 30, teacher_tokenizer=gemma_tokenizer)
    cross_ref = answer_quality(student, teacher, examples, gemma_tokenizer, 30, teacher_tokenizer=gemma_tokenizer)
    assert cross["teacher_ppl"] == pytest.approx(cross_ref["teacher_ppl"], rel=1e-4)
    # an answer the teacher did not give (or another tokenization of it) is not in the states
    other = [*examples[:2], {**examples[2], "chosen": "다른 답"}, *examples[3:]]
    assert first_missing(loaded, other, gemma_tokenizer, 30) == 2
    with pytest.raises(ValueError, match="hidden size 32, but the teacher's LM head takes 64"):
        load_teacher_states(tmp_path / "s.safetensors", tiny_gemma(layers=1, hidden=64))


@pytest.mark.parametrize("change, message", [
    ({"train_rows": 1}, "1 pair(s); distillation needs at least 2"),
    ({"max_length": 20}, "leave no answer tokens within train.max_length 20"),
    ({"beta": 2.5}, "train.beta"),
    ({"other_tokenizer": True}, "tokenizers differ; use train.method gold"),
    ({"other_tokenizer": True, "method": "gkd"}, "train.method: gkd compares teacher and student token by token"),
    ({"other_tokenizer": True, "method": "gold", "gold": {"use_uld_loss": False}}, "train.gold.use_uld_loss: false"),
    ({"method": "gold", "teacher_system": "답만 쓰세요."}, "train.teacher_system: method gold with one shared"),
    ({"method": "golden"}, "train.method: 'golden' is not one of"),
    ({"method": "gold", "gkd": {"max_new_tokens": 4096}}, "train.gkd.max_new_tokens: 4096 leaves no room"),
    ({"method": "gkd", "gkd": {"max_new_tokens": 0}}, "train.gkd.max_new_tokens"),
    ({"teacher_system": "답만 쓰세요."}, "train.teacher_system: method distillm2"),
    ({"method": "gkd", "teacher_system": "답만 쓰세요.", "gkd": {"seq_kd": True}}, "train.gkd.seq_kd"),
    ({"padded_teacher": True}, "the student's embeddings are not the teacher's size"),
])
def test_bad_input_stops_before_training(work, tmp_path, monkeypatch, gemma_tokenizer, change, message):
    d = tmp_path
    (d / "pairs").mkdir()
    rows = (work / "pairs" / "train.jsonl").read_text().splitlines(keepends=True)
    (d / "pairs" / "train.jsonl").write_text("".join(rows[:change.get("train_rows", 6)]))
    (d / "pairs" / "test.jsonl").write_text((work / "pairs" / "test.jsonl").read_text())
    for m in ("teacher", "student"):
        (d / m).symlink_to(work / m)
    if change.get("other_tokenizer"):
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(work / "teacher"))
        tok.add_tokens(["<새토큰>"])
        (d / "teacher").unlink()
        save_model(tiny_gemma(layers=3, seed=1), tok, d / "teacher")
    if change.get("padded_teacher"):  # the teacher's embedding rows padded, the student not aligned to it
        teacher = tiny_gemma(layers=3, seed=1, vocab=262144 + 64)
        (d / "teacher").unlink()
        save_model(teacher, gemma_tokenizer, d / "teacher")
    extra = {k: v for k, v in change.items() if k not in ("train_rows", "other_tokenizer", "padded_teacher")}
    cmd = distill_cmd(d, "bad")
    if extra:
        (d / "p.yaml").write_text(yaml.safe_dump({"train": {"max_steps": 2, **extra}}))
        cmd[cmd.index("--params") + 1] = str(d / "p.yaml")
    # in-process (the stage's main, without the wrapper that turns the error into exit 1): no
    # interpreter start-up per case
    from stages.distill import main

    monkeypatch.setattr(sys, "argv", ["stages.distill", *cmd[2:]])
    with pytest.raises(ValueError) as e:
        main()
    assert message in str(e.value), str(e.value)
    assert not (d / "bad" / "ckpt").exists() or not any((d / "bad" / "ckpt").glob("checkpoint-*"))


def test_shipped_accelerate_configs_load():
    from accelerate.commands.config.config_args import load_config_from_file

    kinds = {n: str(load_config_from_file(str(ROOT / f"configs/accelerate/{n}.yaml")).distributed_type)
             for n in ("ddp", "deepspeed_zero2", "fsdp")}
    assert kinds == {"ddp": "DistributedType.MULTI_GPU", "deepspeed_zero2": "DistributedType.DEEPSPEED",
                     "fsdp": "DistributedType.FSDP"}


# -- gradual beta and on-policy distillation (train.method: gkd) ------------------------------------

def test_gradual_beta_is_the_reference_schedule():
    """jongwooko/distillm-2, kd_loss: beta = 1.0 + 0.5 * min(1., 2 * global_step / max_steps)."""
    from fsku.distill.trainer import gradual_beta

    for step in (0, 1, 5, 10, 13, 20, 40):
        assert gradual_beta(1.0, step, 40) == pytest.approx(1.0 + 0.5 * min(1.0, 2 * step / 40))
    assert gradual_beta(1.8, 40, 40) == 2.0  # capped where the teacher-answer weight (2 - beta) reaches 0


def gkd_config(**gkd):
    from fsku.config import from_dict
    from fsku.distill.config import TrainConfig

    system = gkd.pop("teacher_system", "")
    return from_dict(TrainConfig, {"method": "gkd", "teacher_system": system, "max_steps": gkd.pop("steps", 4),
                                   "batch_size": 2, "max_length": 256,
                                   "gkd": {"lmbda": 0.5, "max_new_tokens": 6, "temperature": 1.0, **gkd}}, "train")


def gkd_common(out, cfg, lr=0.05):
    return dict(output_dir=str(out), per_device_train_batch_size=cfg.batch_size, learning_rate=lr,
                lr_scheduler_type="constant", max_steps=cfg.max_steps, save_strategy="no", logging_steps=1,
                seed=0, data_seed=0, bf16=False, fp16=False, use_cpu=True, gradient_checkpointing=False,
                report_to="none", disable_tqdm=True, dataloader_num_workers=0, eval_strategy="no")


def test_gkd_loss_without_teacher_system_is_upstreams(work, tmp_path):
    """With no teacher_system the teacher reads the student's input, and the replaced compute_loss
    gives TRL's GKDTrainer.compute_loss value on the same (off-policy) batch."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.experimental.gkd import GKDTrainer

    from fsku.distill.examples import load_examples
    from fsku.distill.gkd import gkd_trainer

    tok = AutoTokenizer.from_pretrained(str(work / "student"))
    cfg = gkd_config()
    train = load_examples(work / "pairs" / "train.jsonl", tok)
    student = AutoModelForCausalLM.from_pretrained(str(work / "student"))
    teacher = AutoModelForCausalLM.from_pretrained(str(work / "teacher")).eval()
    trainer = gkd_trainer(cfg, gkd_common(tmp_path, cfg), student, teacher, tok, train, None)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(3)])
    with torch.no_grad():
        ours = trainer.compute_loss(trainer.model, dict(batch))
        upstream = GKDTrainer.compute_loss(trainer, trainer.model, dict(batch))
    assert float(ours) > 0 and float(ours) == pytest.approx(float(upstream), rel=1e-5)


def test_teacher_only_system_prompt_is_learnt(work, tmp_path, gemma_tokenizer):
    """What teacher_system is for: an instruction only the teacher reads is learnt by a student that
    never sees it. The teacher follows its instruction ("answer 정답") whenever its prompt holds it;
    compliance = the student's mean probability of 정답's first token at the answer positions of
    held-out prompts, which never hold the instruction. (Not the greedy share: matching an untold
    random teacher flattens the student to near-uniform, where the argmax is noise.)"""
    import random

    from transformers import AutoModelForCausalLM, AutoTokenizer, Gemma3ForCausalLM

    from fsku.distill.examples import load_examples
    from fsku.distill.gkd import gkd_trainer

    tok = AutoTokenizer.from_pretrained(str(work / "student"))
    system = "INSTRUCTION: 모든 답을 '정답'으로 시작하세요."
    seen = {t for e in load_examples(work / "pairs" / "train.jsonl", tok) for t in tok(e["prompt"]).input_ids}
    marker = next(t for t in tok(system, add_special_tokens=False).input_ids if t not in seen)
    target = tok("정답", add_special_tokens=False).input_ids[0]

    class InstructedTeacher(Gemma3ForCausalLM):
        """A teacher that obeys its system prompt: told (the marker in its input), it answers ``target``."""

        def forward(self, input_ids=None, **kw):
            out = super().forward(input_ids=input_ids, **kw)
            told = (input_ids == marker).any(1).float()[:, None, None]
            bias = torch.zeros(out.logits.shape[-1])
            bias[target] = 30.0
            out.logits = out.logits + told * bias
            return out

    def compliance(model, examples):
        hits = total = 0
        with torch.no_grad():
            for ex in examples:
                ids = tok(ex["prompt"] + ex["chosen"]).input_ids
                n = len(tok(ex["prompt"]).input_ids)
                probs = model(input_ids=torch.tensor([ids])).logits[0, n - 1:len(ids) - 1].softmax(-1)
                hits += float(probs[:, target].sum())
                total += len(probs)
        return hits / total

    def distilled(system):
        random.seed(0)
        torch.manual_seed(0)
        cfg = gkd_config(teacher_system=system, steps=12)
        teacher = InstructedTeacher(tiny_gemma(layers=3, seed=1).config).eval()
        train = load_examples(work / "pairs" / "train.jsonl", tok, tok, cfg.teacher_system)
        assert all(marker not in tok(e["prompt"]).input_ids for e in train)
        assert all(marker in tok(e.get("teacher_prompt", e["prompt"])).input_ids for e in train) == bool(system)
        student = AutoModelForCausalLM.from_pretrained(str(work / "student"))
        trainer = gkd_trainer(cfg, gkd_common(tmp_path / (system or "none"), cfg), student, teacher, tok, train, None)
        trainer.train()
        return trainer.model.eval()

    held_out = load_examples(work / "pairs" / "test.jsonl", tok)
    before = compliance(AutoModelForCausalLM.from_pretrained(str(work / "student")).eval(), held_out)
    told = compliance(distilled(system), held_out)
    untold = compliance(distilled(""), held_out)
    assert before < 0.01 and untold < 0.01, (before, untold)
    assert told > 0.5, (before, told, untold)


def distill_in_process(work, monkeypatch, method: str, train: dict, teacher=None) -> dict:
    """The distill stage's main in this process (no interpreter start-up) with an on-policy method;
    returns its metrics."""
    from stages.distill import main

    cmd = distill_cmd(work, method)
    if teacher:
        cmd[cmd.index("--teacher") + 1] = str(teacher)
    (work / f"{method}.yaml").write_text(yaml.safe_dump({"train": {
        "method": method, "save_steps": 2, "batch_size": 2, "warmup_ratio": 0.0, "lora": {"r": 4, "alpha": 8},
        "gkd": {"lmbda": 0.5, "max_new_tokens": 8}, **train}}))
    cmd[cmd.index("--params") + 1] = str(work / f"{method}.yaml")
    monkeypatch.setattr(sys, "argv", ["stages.distill", *cmd[2:]])
    main()
    return json.loads((work / method / "distill.json").read_text())


def test_gkd_stage_end_to_end(work, monkeypatch):
    """train.method gkd through the stage (in-process): on-policy steps, the adapter out and the metrics."""
    m = distill_in_process(work, monkeypatch, "gkd", {"max_steps": 4, "learning_rate": 0.05})
    assert m["method"] == "gkd" and m["steps"] == 4 and m["kl_after"] < m["kl_before"]
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(files(work / "gkd" / "model"))


def test_gold_distills_across_tokenizers(work, tmp_path):
    """train.method gold with a Qwen2 teacher (Qwen2.5's tokenizer) and a Gemma student: the teacher
    reads its own ChatML prompt while the student reads its own; ULD (positional: Gemma's tokenizer
    is not byte-level BPE) lowers the loss on a fixed batch; on-policy steps find the teacher's
    prompt for the prompts decoded from the student's tokens."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fsku.distill.examples import load_examples
    from fsku.distill.gold import gold_trainer, uld_mode

    tok = AutoTokenizer.from_pretrained(str(work / "student"))
    ttok = AutoTokenizer.from_pretrained(str(work / "qwen_teacher"))
    cfg = gkd_config(steps=6)
    cfg.method = "gold"
    train = load_examples(work / "pairs" / "train.jsonl", tok, ttok, own_prompt=True)
    student = AutoModelForCausalLM.from_pretrained(str(work / "student"))
    teacher = AutoModelForCausalLM.from_pretrained(str(work / "qwen_teacher")).eval()
    uld = uld_mode(cfg, tok, ttok, cross=True)
    assert uld == "positional" and uld_mode(cfg, ttok, ttok, cross=True) == "extended"
    torch.manual_seed(0)
    trainer = gold_trainer(cfg, gkd_common(tmp_path, cfg, lr=0.02), student, teacher, tok,
                           str(work / "qwen_teacher"), train, None, uld)
    read = []
    teacher.register_forward_pre_hook(lambda m, a, kw: read.append(kw["input_ids"]), with_kwargs=True)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(train))])
    with torch.no_grad():
        before = float(trainer.compute_loss(trainer.model, dict(batch)))
    first = [ids[ids != ttok.pad_token_id] for ids in read[0]]
    assert all(ttok.decode(ids).startswith("<|im_start|>system") for ids in first)
    assert all(ttok.decode(ids).count(e["chosen"][:10]) == 1 for ids, e in zip(first, train))
    assert not (batch["input_ids"] == ttok.convert_tokens_to_ids("<|im_start|>")).any()  # a Gemma id, unused
    for ids, mask, e in zip(batch["prompts"], batch["prompt_attention_mask"], train):
        assert ids[mask.bool()].tolist() == tok(e["prompt"]).input_ids  # as at inference (BOS or not)
    trainer.train()
    with torch.no_grad():
        after = float(trainer.compute_loss(trainer.model, dict(batch)))
    logs = [e for e in trainer.state.log_history if "on_policy_loss" in e]
    assert logs, "no on-policy step ran"
    assert after < 0.8 * before, (before, after)


def test_gold_stage_end_to_end(work, monkeypatch):
    """The distill stage with train.method gold and a teacher of another tokenizer: the adapter out,
    and metrics that say which ULD ran and have no token KL (undefined across vocabularies)."""
    m = distill_in_process(work, monkeypatch, "gold", {"max_steps": 3, "learning_rate": 0.02},
                           teacher=work / "qwen_teacher")
    assert m["method"] == "gold" and m["loss"] == "uld_positional" and m["steps"] == 3
    assert m["kl_before"] is None and m["ppl_before"] > 1 and m["teacher_ppl"] > 1
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(files(work / "gold" / "model"))


def teacher_logits(work, name: str, top_k: int, teacher=None) -> tuple:
    """The teacher_logits stage in this process; returns (out dir, its metrics)."""
    from stages.teacher_logits import main

    (work / f"{name}.tl.yaml").write_text(yaml.safe_dump({"teacher_logits": {"top_k": top_k, "batch_size": 3},
                                                          "train": {"teacher_logits": "cached"}}))
    argv = ["stages.teacher_logits", "--params", str(work / f"{name}.tl.yaml"), "--pairs", str(work / "pairs"),
            "--teacher", str(teacher or work / "teacher"), "--out", str(work / name), "--metrics",
            str(work / f"{name}.json")]
    mp = pytest.MonkeyPatch()
    mp.setattr(sys, "argv", argv)
    try:
        main()
    finally:
        mp.undo()
    return work / name, json.loads((work / f"{name}.json").read_text())


def test_teacher_logits_stage_runs_no_teacher_when_distill_runs_it(work, monkeypatch):
    """train.teacher_logits online: the stage writes a note and no logits, the same out whatever
    top_k says (so DVC does not rerun distill for it); a cached distill pointed at it says why."""
    from fsku.distill.teacher_cache import NOT_COMPUTED, TeacherCache
    from stages.teacher_logits import main

    outs = []
    for k in (8, 16):
        (work / f"online{k}.yaml").write_text(yaml.safe_dump({"teacher_logits": {"top_k": k}, "train": {}}))
        monkeypatch.setattr(sys, "argv", ["stages.teacher_logits", "--params", str(work / f"online{k}.yaml"),
                                          "--pairs", str(work / "pairs"), "--teacher", str(work / "missing-teacher"),
                                          "--out", str(work / f"online{k}"),
                                          "--metrics", str(work / f"online{k}.json")])
        main()  # no teacher is loaded: the path given does not even exist
        outs.append({f.name: f.read_bytes() for f in (work / f"online{k}").iterdir()})
        assert json.loads((work / f"online{k}.json").read_text())["computed"] is False
    assert outs[0] == outs[1] and list(outs[0]) == [NOT_COMPUTED]
    with pytest.raises(FileNotFoundError, match="it ran while train.teacher_logits was online"):
        TeacherCache.load(work / "online8")


def test_teacher_logits_hold_the_teachers_top_k(work, gemma_tokenizer):
    """The cache holds, for every answer token of both answers, the teacher's top-k of its own
    unbatched forward pass, the exact leftover mass and the answer token's log-prob."""
    from transformers import AutoModelForCausalLM

    from fsku.distill.examples import load_examples
    from fsku.distill.teacher_cache import TeacherCache, sequences

    out, m = teacher_logits(work, "tl16", 16)
    seqs = sequences(gemma_tokenizer, load_examples(work / "pairs" / "train.jsonl", gemma_tokenizer))
    assert m["sequences"] == len(seqs) == 12 and m["pairs"] == 6 and m["top_k"] == 16
    assert m["positions"] == sum(len(s) - n for s, n in seqs)
    assert 0 < m["mass_in_top_k_mean"] < 1 and 0 <= m["answer_token_in_top_k"] <= 1
    cache = TeacherCache.load(out)
    cache.check(seqs, "train.jsonl", 262144)
    teacher = AutoModelForCausalLM.from_pretrained(str(work / "teacher")).eval()
    i = 3  # pair 1, rejected
    s, n = seqs[i]
    with torch.no_grad():
        lp = torch.log_softmax(teacher(torch.tensor([s])).logits[0, n - 1:-1].float(), -1)
    p0 = int(cache.t["pos_offsets"][i])
    ids = cache.t["ids"][p0:p0 + len(s) - n].long()
    top = lp.topk(16, -1)
    assert torch.equal(ids, top.indices)
    assert torch.allclose(cache.t["logprobs"][p0:p0 + len(s) - n].float(), top.values, atol=2e-2)
    rest = torch.logsumexp(lp.scatter(-1, top.indices, float("-inf")), -1)
    assert torch.allclose(cache.t["rest"][p0:p0 + len(s) - n], rest, atol=1e-4)
    assert torch.allclose(cache.t["label"][p0:p0 + len(s) - n], lp.gather(-1, torch.tensor(s[n:])[:, None])[:, 0],
                          atol=1e-4)
    # rerun: the same bytes
    again, _ = teacher_logits(work, "tl16b", 16)
    assert (out / "train.safetensors").read_bytes() == (again / "train.safetensors").read_bytes()


def test_cached_teacher_logits_train_without_the_teacher(work, monkeypatch):
    """train.teacher_logits: cached trains from the cache (no reference model in the trainer) and
    still moves the student toward the teacher; the figures before and after load the teacher."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import fsku.distill.trainer as trainer_mod

    # a random-init model spreads its mass over the whole vocabulary, where no top-k says anything; a
    # peaked teacher (its final norm scaled up) puts most of it on a few tokens, as trained models do
    sharp = work / "sharp_teacher"
    if not sharp.exists():
        model = AutoModelForCausalLM.from_pretrained(str(work / "teacher"))
        with torch.no_grad():
            model.model.norm.weight.fill_(40.0)  # Gemma's RMSNorm scales by 1 + weight
        save_model(model, AutoTokenizer.from_pretrained(str(work / "teacher")), sharp)
    out, m = teacher_logits(work, "tl64", 64, teacher=sharp)
    assert m["mass_in_top_k_mean"] > 0.5, m
    seen = {}
    real = trainer_mod.DistillTrainer.compute_loss

    def spy(self, model, inputs, *a, **k):
        seen["ref_model"], seen["cache"] = self.ref_model, self.teacher_cache is not None
        return real(self, model, inputs, *a, **k)

    monkeypatch.setattr(trainer_mod.DistillTrainer, "compute_loss", spy)
    cmd = distill_cmd(work, "cached")
    (work / "cached.yaml").write_text(yaml.safe_dump({"train": {
        "max_steps": 4, "batch_size": 2, "learning_rate": 0.05, "warmup_ratio": 0.0, "adaptive_alpha": True,
        "teacher_logits": "cached", "fused_loss": True, "lora": {"r": 4, "alpha": 8}}}))
    cmd[cmd.index("--params") + 1] = str(work / "cached.yaml")
    from stages.distill import main

    cmd[cmd.index("--teacher") + 1] = str(sharp)
    monkeypatch.setattr(sys, "argv", ["stages.distill", *cmd[2:], "--teacher-logits", str(out)])
    main()
    m = json.loads((work / "cached" / "distill.json").read_text())
    assert seen == {"ref_model": None, "cache": True}
    assert m["teacher_logits"] == "cached" and m["steps"] == 4 and m["kl_after"] < m["kl_before"]


@pytest.mark.parametrize("change, message", [
    ({"pairs": "other"}, "pair 0 (row 1 of"),
    ({"pairs": "fewer"}, "6 pairs cached, 5 in"),
    ({"top_k": 300000}, "teacher_logits.top_k: 300000 must be between 1 and the teacher's vocabulary (262144)"),
    ({"fused_loss": False}, "teacher_logits: cached needs fused_loss: true"),
    ({"method": "gkd"}, "teacher_logits: cached serves the distillm2 method"),
    ({"no_cache": True}, "no cached teacher logits; run the teacher_logits stage"),
])
def test_cached_teacher_logits_refuse_what_does_not_match(work, tmp_path, monkeypatch, change, message):
    from stages.distill import main

    out = tmp_path / "none"
    if "top_k" in change:
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            teacher_logits(work, "tl_bad", change["top_k"])
        assert not (work / "tl_bad").exists()
        return
    if not change.get("no_cache"):
        out, _ = teacher_logits(work, "tl8", 8) if not (work / "tl8").exists() else (work / "tl8", None)
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    rows = (work / "pairs" / "train.jsonl").read_text().splitlines(keepends=True)
    if change.get("pairs") == "other":
        rows[0] = rows[0].replace("관련 규정에 따라", "관련 법령에 따라")
    elif change.get("pairs") == "fewer":
        rows = rows[:5]
    (pairs / "train.jsonl").write_text("".join(rows))
    (pairs / "test.jsonl").write_text((work / "pairs" / "test.jsonl").read_text())
    cmd = distill_cmd(work, "refused")
    cmd[cmd.index("--pairs") + 1] = str(pairs)
    train = {"max_steps": 2, "teacher_logits": "cached", "fused_loss": change.get("fused_loss", True),
             "method": change.get("method", "distillm2")}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({"train": train}))
    cmd[cmd.index("--params") + 1] = str(tmp_path / "p.yaml")
    monkeypatch.setattr(sys, "argv", ["stages.distill", *cmd[2:], "--teacher-logits", str(out)])
    with pytest.raises((ValueError, FileNotFoundError)) as e:
        main()
    assert message in str(e.value), str(e.value)
    assert not (work / "refused" / "model").exists()


def test_checkpoints_of_a_swapped_student_of_the_same_shapes_are_not_resumed(tmp_path, gemma_tokenizer):
    """A kill leaves checkpoints marked with the run's fingerprint; another student of the same
    shapes at the same path (other weights) does not resume them: they are removed."""
    import shutil

    from fsku.distill.config import TrainConfig
    from fsku.distill.train import fingerprint, last_checkpoint

    pairs, student, teacher = tmp_path / "train.jsonl", tmp_path / "student", tmp_path / "teacher"
    pairs.write_text('{"prompt": "질문"}\n')
    save_model(tiny_gemma(layers=2, seed=3), gemma_tokenizer, teacher)
    save_model(tiny_gemma(layers=1, seed=1), gemma_tokenizer, student)
    ckpt, cfg = tmp_path / "ckpt", TrainConfig()
    first = fingerprint(cfg, [pairs], [str(teacher), str(student)])
    assert last_checkpoint(ckpt, first) is None
    (ckpt / "checkpoint-1").mkdir()
    (ckpt / "checkpoint-1" / "trainer_state.json").write_text("{}")  # what the killed run left
    assert last_checkpoint(ckpt, first) == str(ckpt / "checkpoint-1")  # the same run resumes it
    shutil.rmtree(student)
    save_model(tiny_gemma(layers=1, seed=2), gemma_tokenizer, student)
    other = fingerprint(cfg, [pairs], [str(teacher), str(student)])
    assert other != first
    assert last_checkpoint(ckpt, other) is None and not (ckpt / "checkpoint-1").exists()


@pytest.mark.skipif(not __import__("fsku.kernels").kernels.has_avx2(), reason="pins x86-64 AVX2 kernels")
def test_distill_outs_do_not_depend_on_the_cpu_kernels_the_machine_would_pick(work):
    """Two kernel choices on one machine stand for two machines: this CPU's own and the generic ones
    a CPU without AVX would get (ATen's ``default`` capability, MKL's ``COMPATIBLE`` path), as the
    environment a stage starts in. The stages' pin (fsku/kernels.py, their default) replaces either
    with the same AVX2 kernels, and distill writes the same adapter bytes. Without the pin the two
    choices give two adapters (measured: README "Reproduce"), so this fails if the pin does not
    reach the stage. That the AVX2 kernels give the same bytes on another CPU is not shown here."""
    from fsku.kernels import has_avx2

    generic = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE", "ONEDNN_MAX_CPU_ISA": "SSE41"}
    (work / "short.yaml").write_text(yaml.safe_dump({"train": {**yaml.safe_load(params(work, "k").read_text())["train"],
                                                               "max_steps": 2}}))
    for name, env in (("own", {}), ("generic", generic)):
        clean = {k: v for k, v in os.environ.items() if k not in generic}  # nothing this process pinned
        cmd = distill_cmd(work, name)
        cmd[cmd.index("--params") + 1] = str(work / "short.yaml")
        proc = subprocess.run([sys.executable, *cmd], cwd=ROOT, env={**clean, **env, "FSKU_CPU_KERNELS": "portable"},
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
        # the generic choice is a user's own setting: the stage says it replaced it
        assert ("replace ATEN_CPU_CAPABILITY=default" in proc.stderr) == bool(env) or not has_avx2()
    assert files(work / "generic" / "model") == files(work / "own" / "model")
