"""Baseline rows, degenerate open answers, the collapsed flag and the metric's floor for degenerate
answers: pure logic on handmade questions, plus the evaluate stage end to end on a tiny random-init
model (baselines beside the model rows in metrics/eval.json and in the plot data)."""

from __future__ import annotations

import csv
import json
import logging
import random
import sys

import pytest
import yaml

from fsku.metric import CHAR_BIGRAM, Similarity, score_items, summarize
from fsku.predict.answer import Answerer, Item
from fsku.predict.baselines import (
    baseline_answers,
    best_baseline,
    evaluate_baselines,
    expected_random_accuracy,
    gold_mode,
    margins,
    mcq_agreement,
)
from fsku.predict.config import PredictConfig
from fsku.predict.fallback import NO_CONTEXT_ANSWER, answer_from_context
from fsku.predict.health import COLLAPSE_SHARE, answer_health, collapse, mcq_distribution
from fsku.questions import Question, load_questions
from fsku.scoring import char_ngram_cosine, keyword_score

from conftest import ROOT, run, tiny_gemma

OPTS4 = ["전자서명 인증서 발급", "접근매체 분실 신고", "개인정보 파기 절차", "망분리 예외 승인"]
OPTS5 = ["정보보호 최고책임자 지정", "침해사고 보고 의무", "전산자료 백업 보관", "외부 주문등 위탁",
         "비상계획 수립 훈련"]
OPEN_GOLD = "이용자는 접근매체를 분실한 때 즉시 금융회사에 통지하여야 한다."


def _questions():
    """Four MCQs (gold 2, 2, 3, 1: the gold mode is 2) and two open-ended ones."""
    return [Question("M1", "", "분실 시 해야 하는 것은?", OPTS4, answer="2"),
            Question("M2", "", "사고 발생 시 해야 하는 것은?", OPTS5, answer="2"),
            Question("M3", "", "보유기간이 지난 개인정보는?", OPTS4, answer="3"),
            Question("M4", "", "외부 주문등 위탁 대상은?", OPTS5, answer="1"),
            Question("O1", "", "접근매체 분실 시 이용자의 의무를 설명하세요.", [], answer=OPEN_GOLD,
                     keywords=["접근매체", "통지"]),
            Question("O2", "", "백업 정책을 설명하세요.", [],
                     answer="전산자료는 주기적으로 백업하여 원격지에 보관한다.", keywords=["백업", "원격지"])]


def _hits(text):
    return [{"chunk_id": "c", "source": "s", "text": text}]


# each MCQ's retrieved text is its gold option, except M4, which retrieves nothing (overlap with the
# stem, which names option 4): the overlap baseline gets 3 of 4
HITS = {"M1": _hits(OPTS4[1]), "M2": _hits(OPTS5[1]), "M3": _hits(OPTS4[2]), "M4": [], "O1": _hits(OPEN_GOLD),
        "O2": []}


def test_baselines_on_handmade_questions():
    qs = _questions()
    answers = baseline_answers(qs, HITS, seed=3)
    assert answers["mcq_constant_1"] == {"M1": "1", "M2": "1", "M3": "1", "M4": "1"}
    assert gold_mode(qs) == 2 and set(answers["mcq_constant_gold_mode"].values()) == {"2"}
    rng = random.Random(3)
    assert answers["mcq_random"] == {q.id: str(rng.randint(1, len(q.options))) for q in qs if q.is_mcq}
    assert answers["mcq_overlap"] == {"M1": "2", "M2": "2", "M3": "3", "M4": "4"}
    assert answers["open_constant_dot"] == {"O1": ".", "O2": "."}
    assert answers["open_fallback"] == {"O1": OPEN_GOLD, "O2": NO_CONTEXT_ANSWER}

    summaries, records = evaluate_baselines(qs, HITS, Similarity(CHAR_BIGRAM), seed=3)
    assert summaries["mcq_constant_1"]["mcq_accuracy"] == 0.25
    assert summaries["mcq_constant_gold_mode"]["mcq_accuracy"] == 0.5
    assert summaries["mcq_constant_gold_mode"]["option"] == 2
    assert summaries["mcq_overlap"]["mcq_accuracy"] == 0.75
    draw = sum(answers["mcq_random"][q.id] == q.answer for q in qs if q.is_mcq) / 4
    assert summaries["mcq_random"]["mcq_accuracy"] == draw
    assert summaries["mcq_random"]["mcq_expected_accuracy"] == pytest.approx((1 / 4 + 1 / 5) / 2, abs=1e-4)
    assert expected_random_accuracy(qs) == pytest.approx(0.225)
    assert summaries["open_constant_dot"]["open_score"] == 0.0
    o2 = (0.6 * char_ngram_cosine(NO_CONTEXT_ANSWER, qs[5].answer)
          + 0.4 * keyword_score(NO_CONTEXT_ANSWER, qs[5].keywords))
    assert summaries["open_fallback"]["open_score"] == pytest.approx((1.0 + o2) / 2, abs=1e-4)
    assert all(s["total"] is None for s in summaries.values())  # one half of the set each
    assert summaries["mcq_overlap"]["open_score"] is None and summaries["open_fallback"]["mcq_accuracy"] is None
    assert {r["row"] for r in records} == set(answers) and len(records) == 4 * 4 + 2 * 2
    assert all(r["degenerate"] == "punctuation" for r in records if r["row"] == "open_constant_dot")

    best = best_baseline(summaries)
    assert best["mcq"] == {"row": "mcq_overlap", "accuracy": 0.75}
    assert best["open"]["row"] == "open_fallback"
    assert best["total"] == pytest.approx(0.5 * 0.75 + 0.5 * best["open"]["score"], abs=1e-4)
    m = margins({"mcq_accuracy": 0.5, "open_score": 0.9, "total": 0.7}, best)
    assert m["mcq"] == -0.25 and m["open"] == pytest.approx(0.9 - best["open"]["score"], abs=1e-4)
    assert m["total"] == pytest.approx(0.7 - best["total"], abs=1e-4)


def test_random_baseline_expectation_counts_in_the_best_mcq_bar():
    """With nothing to beat but the constants and an unlucky draw, the bar is the expectation."""
    qs = [Question(f"M{i}", "", "문항?", ["가", "나", "다", "라"], answer="4") for i in range(8)]
    summaries, _ = evaluate_baselines(qs, {}, Similarity(CHAR_BIGRAM), seed=0)
    summaries = {k: v for k, v in summaries.items() if k in ("mcq_constant_1", "mcq_random")}
    summaries["mcq_random"]["mcq_accuracy"] = 0.0
    assert best_baseline(summaries)["mcq"] == {"row": "mcq_random", "accuracy": 0.25}


def test_mcq_agreement():
    a = [{"id": "1", "type": "mcq", "answer": "2"}, {"id": "2", "type": "mcq", "answer": "3"},
         {"id": "3", "type": "open", "answer": "가"}]
    b = [{"id": "1", "type": "mcq", "answer": "2"}, {"id": "2", "type": "mcq", "answer": "1"},
         {"id": "3", "type": "open", "answer": "가"}]
    assert mcq_agreement(a, b) == 0.5 and mcq_agreement(a, a) == 1.0 and mcq_agreement(a[2:], b) is None


def _mcq_records(answers, n_options=4):
    return [{"id": str(i), "type": "mcq", "answer": a, "n_options": n_options, "fallback": None}
            for i, a in enumerate(answers)]


def test_collapsed_flag_fires_above_60_percent_only(caplog):
    above = _mcq_records(["1"] * 7 + ["2", "3", "4"])  # 70%
    at = _mcq_records(["1"] * 6 + ["2", "3", "4", "2"])  # 60%: not above
    below = _mcq_records(["1", "2", "3", "4"] * 3)
    assert COLLAPSE_SHARE == 0.6
    assert collapse(above) == {"mcq_top_answer": "1", "mcq_top_share": 0.7, "collapsed": True}
    assert collapse(at)["collapsed"] is False and collapse(at)["mcq_top_share"] == 0.6
    assert collapse(below)["collapsed"] is False
    assert collapse([{"id": "o", "type": "open", "answer": "가"}])["collapsed"] is False
    with caplog.at_level(logging.WARNING, logger="fsku.predict.health"):
        assert answer_health(at, "m")["collapsed"] is False
        assert not caplog.records
        assert answer_health(above, "models/x")["collapsed"] is True
    assert "models/x: collapsed" in caplog.text and "70%" in caplog.text
    # every option is listed, unused ones with 0
    assert mcq_distribution(_mcq_records(["5", "5", "1"], n_options=5)) == {"1": 1, "2": 0, "3": 0, "4": 0, "5": 2}


class ScriptedBackend:
    """Generates the given texts, one per prompt, in order."""

    def __init__(self, texts):
        self.texts = texts

    def generate(self, prompts, sp, seed=0, max_time=None):
        return [{"text": self.texts[i], "finish_reason": "stop"} for i in range(len(prompts))]


def test_degenerate_open_answers_go_to_the_fallback_with_the_reason():
    texts = [". . . . .", "", "hello world", "보안 점검 결과 보고 " * 8, "정당" + "당" * 60, "[질문]",
             "접근매체 분실 시 의무를 설명하세요.", "접근매체를 분실하면 즉시 금융회사에 통지한다."]
    reasons = ["degenerate:punctuation", "degenerate:empty", "degenerate:no_hangul", "degenerate:repetition",
               "degenerate:repetition", "degenerate:too_short", "degenerate:echo", None]
    qs = [Question(f"O{i}", "", "접근매체 분실 시 의무를 설명하세요.", [], answer=OPEN_GOLD) for i in range(len(texts))]
    items = [Item(q, f"prompt {q.id}", _hits(OPEN_GOLD + " 금융회사는 손해를 배상한다."), key=q.id) for q in qs]
    recs = Answerer(ScriptedBackend(texts), PredictConfig(batch_size=8)).run(items)
    assert [r["fallback"] for r in recs] == reasons
    for r, q, it, text in zip(recs, qs, items, texts):
        if r["fallback"]:
            assert r["source"] == "context" and r["answer"] == answer_from_context(q, it.hits)
            assert r["generated"] == " ".join(text.split())
        else:
            assert r["source"] == "model" and r["answer"] == text
    health = answer_health(recs)
    assert health["degenerate_open"] == {"count": 7, "share": 0.875, "reasons": {
        "echo": 1, "empty": 1, "no_hangul": 1, "punctuation": 1, "repetition": 2, "too_short": 1}}


def test_degenerate_answer_scores_exactly_zero(tiny_encoder):
    """The static encoder credits punctuation with some cosine; the metric does not."""
    q = Question("O", "", "설명하세요.", [], answer=OPEN_GOLD, keywords=["접근매체"])
    sim = Similarity(str(tiny_encoder))
    assert sim([". . . ."], [OPEN_GOLD])[0] != 0.0  # what would be credited without the rule
    preds = {"dots": ". . . .", "dot": ".", "english": "access media", "loop": "접근매체 통지 " * 10, "good": OPEN_GOLD}
    scores = {}
    for name, pred in preds.items():
        item = score_items([q], {"O": pred}, sim)[0]
        scores[name] = item["score"]
        if name != "good":
            assert item["score"] == item["cosine"] == item["keyword"] == 0.0 and item["degenerate"], name
    assert scores["good"] > 0.9
    assert max(v for k, v in scores.items() if k != "good") <= scores["dot"] == 0.0
    # model-only figures still work beside the rule
    items = score_items([q, Question("O2", "", "?", [], answer=OPEN_GOLD)], {"O": ".", "O2": OPEN_GOLD}, sim)
    items[0]["source"], items[1]["source"] = "model", "context"
    s = summarize(items)
    assert s["open_degenerate"] == 1 and s["model_only"]["open_score"] == 0.0 and s["open_score"] > 0.4


def _write(path, rows, header):
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_evaluate_stage_reports_baselines_margins_and_teacher_agreement(tmp_path, gemma_tokenizer):
    """The stage on 4 MCQs and 2 open questions with a tiny model as both student and teacher."""
    from fsku.models.load import save_model

    model = tmp_path / "tiny"
    save_model(tiny_gemma(layers=2), gemma_tokenizer, model)
    (tmp_path / "models").mkdir()
    for name in ("student_init", "teacher"):
        (tmp_path / "models" / name).symlink_to(model)
    save_model(tiny_gemma(layers=2, seed=3), gemma_tokenizer, tmp_path / "models" / "student_sft")  # another model
    qs = load_questions(ROOT / "data/raw/questions/eval.csv")
    chosen = [q for q in qs if q.is_mcq][:4] + [q for q in qs if not q.is_mcq][:2]
    path = _write(tmp_path / "q.csv", [[q.id, q.text, q.answer, ",".join(q.keywords)] for q in chosen],
                  ("ID", "Question", "Answer", "Keyword"))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({
        "eval": {"similarity_model": "char-bigram", "max_tokens": 4, "batch_size": 8},
        "gen": {"max_model_len": 512}, "prompts": {"top_k": 0}}))
    proc = run([sys.executable, "-m", "stages.evaluate", "--questions", str(path),
                "--rows", "student", "sft", "teacher", "--index", "",
                "--shots", str(ROOT / "data/raw/questions/train.csv")], cwd=tmp_path,
               env={"PYTHONPATH": str(ROOT)})
    # one child process per row, one at a time (each ends before the next starts), the teacher first
    events = [x for x in proc.stdout.splitlines() if x.startswith("row ")]
    assert [x.split(":")[0] for x in events] == ["row teacher"] * 2 + ["row student"] * 2 + ["row sft"] * 2
    assert all("starting its process" in x for x in events[::2])
    assert all(" done, peak memory " in x and x.endswith("MB, returned") for x in events[1::2])
    assert len({x.split("process ")[1].split()[0] for x in events[1::2]}) == 3
    m = json.loads((tmp_path / "metrics/eval.json").read_text())
    assert set(m["baselines"]) == {"mcq_constant_1", "mcq_constant_gold_mode", "mcq_random", "mcq_overlap",
                                   "open_constant_dot", "open_fallback"}
    assert list(m["rows"]) == ["student", "sft", "teacher"]
    assert sum(m["gold_mcq_distribution"].values()) == 4
    best = m["best_baseline"]
    assert best["mcq"]["accuracy"] == max(max(b["mcq_accuracy"], b.get("mcq_expected_accuracy", 0))
                                          for b in m["baselines"].values() if b["kind"] == "mcq")
    for name, row in m["rows"].items():
        assert row["margin"]["mcq"] == pytest.approx(row["mcq_accuracy"] - best["mcq"]["accuracy"], abs=1e-4)
        assert row["margin"]["total"] == pytest.approx(row["total"] - best["total"], abs=1e-4)
        assert row["model_only"]["margin"]["total"] == pytest.approx(row["model_only"]["total"] - best["total"],
                                                                      abs=1e-4)
        assert isinstance(row["collapsed"], bool) and sum(row["mcq_distribution"].values()) == 4
        assert row["collapsed"] == (row["mcq_top_share"] > 0.6)
        caught = sum(n for f, n in row["fallbacks"].items() if f.startswith("degenerate:"))
        assert row["degenerate_open"]["count"] == caught
    assert m["rows"]["student"]["teacher_agreement"] == 1.0  # the same model, greedy
    assert m["rows"]["teacher"]["teacher_agreement"] is None
    # fidelity: KL to the teacher on its own answers (4 MCQ in the taught format + its open answers)
    student, sft = m["rows"]["student"], m["rows"]["sft"]
    # two random-init models: near-uniform, close
    assert student["kl_to_teacher"] == pytest.approx(0.0, abs=1e-4) and sft["kl_to_teacher"] > 1e-3
    assert student["fidelity"]["answers"] == sft["fidelity"]["answers"] >= 4 and sft["fidelity"]["tokens"] > 0
    # the teacher's side of both came from what its row stored, not from running it again
    assert student["fidelity"]["teacher_side"] == sft["fidelity"]["teacher_side"] == "states"
    assert "kl_to_teacher" not in m["rows"]["teacher"]
    plot = list(csv.DictReader(open(tmp_path / "metrics/eval_scores.csv", encoding="utf-8")))
    assert [r["row"] for r in plot] == [*m["baselines"], "best_baseline", "student", "sft", "teacher"]
    assert {r["kind"] for r in plot[:7]} == {"baseline"} and {r["kind"] for r in plot[7:]} == {"model"}
    assert plot[-1]["total"] == str(m["rows"]["teacher"]["total"])
    preds = [json.loads(x) for x in (tmp_path / "data/eval/predictions.jsonl").read_text().splitlines()]
    assert {p["row"] for p in preds} == {*m["baselines"], "student", "sft", "teacher"}
    caught = [p for p in preds if (p.get("fallback") or "").startswith("degenerate:")]  # 4 tokens: too short
    assert caught and all(isinstance(p["generated"], str) for p in caught)  # what the model said is kept


class CollapsedBackend:
    """Answers "정답: 1" to every multiple-choice prompt and ". . . ." to every open one, as the
    collapsed students did (the two kinds are told apart by their token limits)."""

    name = "scripted"
    tokenizer = type("NoTemplate", (), {"chat_template": None})()

    def __init__(self, mcq_max_tokens):
        self.mcq_max_tokens = mcq_max_tokens

    def generate(self, prompts, sp, seed=0, max_time=None):
        text = "정답: 1" if sp.max_tokens == self.mcq_max_tokens else ". . . ."
        return [{"text": text, "finish_reason": "stop"} for _ in prompts]


def test_predict_command_flags_a_collapsed_model(tmp_path, monkeypatch, caplog):
    """`python -m fsku predict` (and so the predict stage) writes collapsed: true, the MCQ answer
    distribution and the degenerate open answers, each answered from the context instead."""
    import fsku.predict.run as predict_run
    from fsku.cli import main as cli

    monkeypatch.setattr(predict_run, "make_backend", lambda kind, model_dir, cfg: CollapsedBackend(5))
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(b"x")
    qs = load_questions(ROOT / "data/raw/test.csv")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"predict": {"mcq_mode": "generate", "mcq_max_tokens": 5, "max_tokens": 7,
                                                  "fast_max_tokens": 7}, "prompts": {"top_k": 0}, "gen": {}}))
    out, metrics = tmp_path / "sub.csv", tmp_path / "m.json"
    with caplog.at_level(logging.WARNING):
        assert cli(["predict", "--model", str(model), "--test", str(ROOT / "data/raw/test.csv"), "--out", str(out),
                    "--index", "", "--params", str(params), "--cache", "", "--metrics", str(metrics)]) == 0
    m = json.loads(metrics.read_text())
    n_mcq, n_open = sum(q.is_mcq for q in qs), sum(not q.is_mcq for q in qs)
    assert m["collapsed"] is True and m["mcq_top_answer"] == "1" and m["mcq_top_share"] == 1.0
    assert m["mcq_distribution"]["1"] == n_mcq and sum(m["mcq_distribution"].values()) == n_mcq
    assert m["degenerate_open"] == {"count": n_open, "share": 1.0, "reasons": {"punctuation": n_open}}
    assert "collapsed" in caplog.text
    side = [json.loads(x) for x in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    opn = [s for s in side if s["type"] == "open"]
    assert all(s["fallback"] == "degenerate:punctuation" and s["source"] == "context" and s["generated"] == ". . . ."
               for s in opn)
    assert all(". . ." not in s["answer"] for s in opn)


def test_a_row_file_for_other_questions_is_refused_by_name(tmp_path):
    """The report reads each row's answers back; answers to another question set name their file."""
    from fsku.io import write_jsonl
    from stages.evaluate import read_rows

    qs = load_questions(ROOT / "data/raw/questions/eval.csv")[:3]
    path = tmp_path / "distilled.jsonl"
    write_jsonl(path, [{"id": q.id, "type": "mcq", "answer": "1"} for q in qs])
    assert [x["id"] for x in read_rows(path, qs)] == [q.id for q in qs]
    write_jsonl(path, [{"id": q.id, "type": "mcq", "answer": "1"} for q in qs[:2]])
    with pytest.raises(ValueError, match="distilled.jsonl: answers other questions than 3"):
        read_rows(path, qs)


def test_fidelity_across_tokenizers_has_no_token_kl(tmp_path, gemma_tokenizer, qwen_tokenizer):
    """A row whose model tokenizes differently from the teacher (a gold student) gets no token KL,
    and each perplexity over its own model's tokens of the teacher's answer; the same tokenizer, a KL."""
    from fsku.distill.quality import teacher_states
    from fsku.gen.format import format_prompt
    from fsku.models.load import save_model
    from fsku.predict.fidelity import kl_to_teacher

    from conftest import tiny_qwen2

    save_model(tiny_qwen2(layers=1), qwen_tokenizer, tmp_path / "qwen")
    save_model(tiny_gemma(layers=1, seed=4), gemma_tokenizer, tmp_path / "gemma")
    user, answer = "전자금융거래법상 접근매체가 아닌 것은?", "정답: 2 전자서명생성정보"
    examples = [{"user": user, "prompt": format_prompt(gemma_tokenizer, user), "chosen": answer}]
    teacher = tiny_gemma(layers=2).eval()
    cross = kl_to_teacher(tmp_path / "qwen", teacher, examples, 256, gemma_tokenizer)
    assert cross["kl"] is None and cross["student_ppl"] > 1 and cross["teacher_ppl"] > 1
    assert cross["tokens"] == len(qwen_tokenizer(answer + "<|im_end|>", add_special_tokens=False).input_ids)
    same = kl_to_teacher(tmp_path / "gemma", teacher, examples, 256, gemma_tokenizer)
    assert same["kl"] > 0 and same["teacher_ppl"] == cross["teacher_ppl"]
    # the teacher's stored states serve both, to float rounding, and say so
    states = teacher_states(teacher, examples, gemma_tokenizer, 256)
    for model, ref in (("qwen", cross), ("gemma", same)):
        got = kl_to_teacher(tmp_path / model, teacher, examples, 256, gemma_tokenizer, states=states)
        assert got["teacher_side"] == "states" and ref["teacher_side"] == "model" and got["tokens"] == ref["tokens"]
        for k in ("kl", "student_ppl", "teacher_ppl"):
            assert got[k] == (None if ref[k] is None else pytest.approx(ref[k], rel=1e-4, abs=1e-4)), k
    # states of other answers: the teacher runs instead
    other = teacher_states(teacher, [{**examples[0], "chosen": "정답: 1 공인인증서"}], gemma_tokenizer, 256)
    assert kl_to_teacher(tmp_path / "gemma", teacher, examples, 256, gemma_tokenizer, states=other) == same
