"""Answering, the circuit breaker, the time budget, resume, and the `python -m fsku predict|score`
commands, on a tiny random-init Gemma 3 with the real tokenizer."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from fsku.cli import main as cli
from fsku.gen.backends import TransformersBackend
from fsku.gen.config import GenConfig, PromptsConfig
from fsku.models.load import save_model
from fsku.predict.answer import Answerer, Budget, prepare
from fsku.predict.config import PredictConfig
from fsku.questions import Question, load_questions
from fsku.scoring import keyword_score

from conftest import ROOT, SHARED, run, tiny_gemma

TEST_CSV = ROOT / "data/raw/test.csv"
EVAL_CSV = ROOT / "data/raw/questions/eval.csv"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, gemma_tokenizer):
    d = tmp_path_factory.mktemp("predict") / "model"
    save_model(tiny_gemma(layers=2), gemma_tokenizer, d)
    return d


@pytest.fixture(scope="module")
def backend(model_dir):
    return TransformersBackend(model_dir, GenConfig(max_model_len=512, batch_size=8))


def _answer(backend, questions, **cfg):
    cfg = PredictConfig(**{"max_tokens": 4, "mcq_max_tokens": 4, "batch_size": 8, **cfg})
    items = prepare(questions, None, PromptsConfig(top_k=0), backend.tokenizer)
    return Answerer(backend, cfg).run(items)


def _valid(q: Question, answer: str) -> bool:
    return 1 <= int(answer) <= len(q.options) if q.is_mcq else bool(answer.strip())


def test_option_scoring_matches_full_sequence_logprobs(backend):
    """One forward pass over the shared prompt scores single-token continuations; longer ones are
    scored token by token. Both equal the log-probabilities computed from full sequences."""
    tok, model = backend.tokenizer, backend.model
    prompt = "질문: 접근매체를 분실하면 어떻게 하는가?\n"

    def full(cont):
        ids = tok(prompt + cont).input_ids
        shared = len(tok(prompt + "정답: ").input_ids) if cont.startswith("정답") else len(tok(prompt).input_ids)
        with torch.no_grad():
            lp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
        return sum(float(lp[i - 1, ids[i]]) for i in range(shared, len(ids)))

    one_pass = [f"정답: {i}" for i in range(1, 6)]
    got = backend.continuation_logprobs([prompt], [one_pass])[0]
    assert got == pytest.approx([full(c) for c in one_pass], abs=1e-4)
    assert len(set(got)) == 5
    longer = ["즉시 금융회사에 신고한다", "아무것도 하지 않는다"]
    got = backend.continuation_logprobs([prompt], [longer])[0]
    assert got == pytest.approx([full(c) for c in longer], abs=1e-3)


def test_option_text_scoring_equals_a_direct_computation(tmp_path, gemma_tokenizer):
    """Options scored on one cached prompt pass, batched, equal each full sequence's own log-probs;
    the prompt is longer than the tiny model's sliding window (8), so the cached window is exercised."""
    from fsku.gen.backend import option_sequences
    from fsku.gen.choice import option_scores

    save_model(tiny_gemma(layers=3, seed=3), gemma_tokenizer, tmp_path / "m")
    b = TransformersBackend(tmp_path / "m", GenConfig(max_model_len=512))
    prompt = "[질문]\n접근매체를 분실하면 어떻게 하는가?\n1 신고\n2 무시\n\n### 답변\n"
    opts = ["즉시 금융회사에 신고한다", "아무것도 하지 않는다", "즉시 폐기한다", "신고"]
    got = b.option_logprobs([prompt], [opts])[0]
    head, seqs = option_sequences(b.tokenizer, prompt, opts, 512)
    for s, g in zip(seqs, got):
        with torch.no_grad():
            lp = torch.log_softmax(b.model(torch.tensor([s])).logits[0].float(), -1)
        assert g == pytest.approx([float(lp[i - 1, s[i]]) for i in range(head, len(s))], abs=1e-4)
        assert len(g) == len(s) - head and len(g) >= 1
    bare = "[질문]\n접근매체를 분실하면?\n\n### 답변\n"
    plain = option_scores(b, prompt, bare, opts, "option")
    assert plain == pytest.approx([sum(g) / len(g) for g in got])
    bare_lp = b.option_logprobs([bare], [opts])[0]
    pmi = option_scores(b, prompt, bare, opts, "option_pmi")
    assert pmi == pytest.approx([a - sum(x) / len(x) for a, x in zip(plain, bare_lp)])


def test_options_are_scored_under_the_cloze_prompt(backend):
    """Text scorings see the context and the stem, never the listed options; loglik reads the digit
    after the listed options. The record's choice is the best cloze score."""
    from fsku.gen.choice import best, option_scores

    chunk = {"chunk_id": "c", "source": "a.pdf", "title": "법", "section": "",
             "text": "접근매체 분실 시 즉시 신고한다."}
    q = Question("Q1", "분실 시 조치는?\n1 즉시 신고한다\n2 아무것도 하지 않는다", "분실 시 조치는?",
                 ["즉시 신고한다", "아무것도 하지 않는다"])
    it = prepare([q], lambda t, k: [chunk], PromptsConfig(top_k=1), backend.tokenizer)[0]
    assert "아무것도 하지 않는다" in it.prompt and "아무것도" not in it.cloze and "접근매체 분실" in it.cloze
    assert "접근매체 분실" not in it.bare and "분실 시 조치는?" in it.bare
    for how in ("option", "option_pmi"):
        rec = Answerer(backend, PredictConfig(mcq_mode=how, batch_size=8)).run([it])[0]
        assert rec["answer"] == str(best(option_scores(backend, it.cloze, it.bare, q.options, how)))
        assert set(rec["choice_by"]) == {"option", "option_pmi"}


@pytest.mark.parametrize("mode", ["option_pmi", "option", "loglik", "generate"])
def test_every_question_gets_a_valid_answer(backend, mode):
    qs = load_questions(TEST_CSV)
    recs = _answer(backend, qs, mcq_mode=mode)
    assert [r["id"] for r in recs] == [q.id for q in qs]
    assert all(_valid(q, r["answer"]) for q, r in zip(qs, recs))
    mcq = [r for r in recs if r["type"] == "mcq"]
    if mode != "generate":
        assert all(r["fallback"] is None and 0 < r["confidence"] <= 1 for r in mcq)
    else:  # a random model rarely names an option: those fall back to the likeliest one
        assert all(r["fallback"] in (None, "no_choice") for r in mcq)
        assert all(r["confidence"] is not None for r in mcq if r["fallback"])


def test_timeout_falls_back_and_keeps_every_row(backend):
    qs = load_questions(TEST_CSV)
    recs = _answer(backend, qs, mcq_mode="generate", question_timeout_s=1e-9, max_tokens=16, mcq_max_tokens=16)
    assert all(_valid(q, r["answer"]) for q, r in zip(qs, recs))
    opn = [r for r in recs if r["type"] == "open"]
    assert opn and all(r["fallback"] == "timeout" for r in opn)
    assert {r["fallback"] for r in recs if r["type"] == "mcq"} <= {None, "timeout"}


class BrokenBackend(TransformersBackend):
    """A backend whose every model call fails, as a crashed CUDA context would."""

    def generate(self, *a, **k):
        raise RuntimeError("device lost")

    def continuation_logprobs(self, *a, **k):
        raise RuntimeError("device lost")

    def option_logprobs(self, *a, **k):
        raise RuntimeError("device lost")


def test_model_errors_fall_back_to_the_context(model_dir):
    broken = BrokenBackend(model_dir, GenConfig(max_model_len=512))
    qs = load_questions(TEST_CSV)
    hits = [{"chunk_id": "c", "source": "s", "text": "이용자는 접근매체를 분실한 때 즉시 금융회사에 통지하여야 한다. "
             "금융회사는 통지를 받은 때부터 손해를 배상한다."}]
    for mode in ("option_pmi", "loglik", "generate"):
        items = prepare(qs, lambda q, k: hits, PromptsConfig(top_k=1), broken.tokenizer)
        recs = Answerer(broken, PredictConfig(mcq_mode=mode, max_tokens=4)).run(items)
        # three failed calls open the breaker: the rest are not asked
        assert {r["fallback"] for r in recs} == {"error", "breaker_open"} and recs[0]["fallback"] == "error"
        assert all(_valid(q, r["answer"]) for q, r in zip(qs, recs))
        assert all("접근매체" in r["answer"] for r in recs if r["type"] == "open")


def test_budget_steps_down_when_the_projection_overruns():
    now = [0.0]
    b = Budget(total_s=100, n_questions=10, start=0.0, clock=lambda: now[0])
    now[0] = 20.0
    b.record("full", 20.0, 2)  # 20 s + 8 more at 10 s = 100: within budget
    assert b.mode == "full"
    now[0] = 45.0
    b.record("full", 25.0, 2)  # 45 s + 6 at 11.25 s > 100
    assert b.mode == "fast" and b.switches[0]["after_questions"] == 4
    now[0] = 95.0
    b.record("fast", 50.0, 2)  # 95 s + 4 at 25 s > 100
    assert b.mode == "fallback" and [s["to"] for s in b.switches] == ["fast", "fallback"]


def _params(tmp_path, **predict):
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump({"predict": {"max_tokens": 6, "mcq_max_tokens": 6, "fast_max_tokens": 2,
                                             "batch_size": 4, **predict},
                                 "gen": {"max_model_len": 512}, "prompts": {"top_k": 0}}))
    return p


def _write_csv(path, rows, header=("ID", "Question"), bom=False, crlf=False):
    with open(path, "w", encoding="utf-8-sig" if bom else "utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\r\n" if crlf else "\n")
        w.writerow(header)
        w.writerows(rows)
    return path


def _predict(model_dir, test, out, params, cache="", metrics=None):
    args = ["predict", "--model", str(model_dir), "--test", str(test), "--out", str(out), "--index", "",
            "--params", str(params), "--cache", cache]
    return cli(args + (["--metrics", str(metrics)] if metrics else []))


def test_predict_command_names_a_missing_params_section(tmp_path, capsys):
    """A params file without a section predict reads is an error naming it, before any model loads
    (no quiet defaults)."""
    test, out = tmp_path / "t.csv", tmp_path / "sub.csv"
    _write_csv(test, [["Q1", "질문"]])
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"predict": {}, "prompts": {"top_k": 0}}))
    assert _predict(tmp_path / "no-model", test, out, params) == 1
    assert "params.yaml: missing section 'gen'" in capsys.readouterr().err and not out.exists()


def test_predict_command_handles_awkward_but_valid_input(model_dir, tmp_path):
    """BOM, CRLF, a 20,000-character question (cut from the left to fit), 7 options, and the
    project's test.csv: one row per ID in input order, MCQ answers within their options."""
    rows = [[q.id, q.text] for q in load_questions(TEST_CSV)[:6]]
    rows.append(["LONG", "가" * 19_900 + "\n설명하세요."])
    rows.append(["SEVEN", "다음 중 옳은 것은?\n" + "\n".join(f"{i} 보기 {i}" for i in range(1, 8))])
    test = _write_csv(tmp_path / "test.csv", rows, bom=True, crlf=True)
    out, metrics = tmp_path / "sub.csv", tmp_path / "m.json"
    assert _predict(model_dir, test, out, _params(tmp_path), metrics=metrics) == 0
    got = list(csv.DictReader(open(out, encoding="utf-8")))
    assert [r["ID"] for r in got] == [r[0] for r in rows]
    qs = load_questions(test)
    assert all(_valid(q, r["Answer"]) for q, r in zip(qs, got))
    assert 1 <= int(got[-1]["Answer"]) <= 7
    side = [json.loads(x) for x in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert [s["id"] for s in side] == [r[0] for r in rows]
    assert all({"confidence", "seconds", "fallback", "mode"} <= set(s) for s in side)
    m = json.loads(metrics.read_text())
    assert m["questions"] == 8 and m["latency_p95_s"] >= m["latency_p50_s"] > 0 and m["projected_515_min"] > 0


@pytest.mark.parametrize("rows, header, message", [
    ([["Q1", "질문?"]], ("ID", "Text"), "missing column(s) Question"),
    ([["Q1", "질문?"], ["Q1", "또 질문?"]], ("ID", "Question"), "row 3, column ID: duplicate ID Q1"),
    ([["Q1", "질문?"], ["Q2", "  "]], ("ID", "Question"), "row 3, column Question: empty question"),
    ([["Q1", "가" * 20_001]], ("ID", "Question"), "row 2, column Question: 20001 characters"),
    ([["", "질문?"]], ("ID", "Question"), "row 2, column ID: empty"),
])
def test_predict_command_rejects_bad_input_and_keeps_the_old_submission(model_dir, tmp_path, capsys, rows, header,
                                                                       message):
    out = tmp_path / "sub.csv"
    out.write_text("ID,Answer\nOLD,1\n")
    test = _write_csv(tmp_path / "bad.csv", rows, header=header)
    assert _predict(model_dir, test, out, _params(tmp_path)) == 1
    err = capsys.readouterr().err
    assert "bad.csv" in err and message in err, err
    assert out.read_text() == "ID,Answer\nOLD,1\n"


def test_time_budget_switches_mode_and_says_so(model_dir, tmp_path):
    out, metrics = tmp_path / "sub.csv", tmp_path / "m.json"
    assert _predict(model_dir, TEST_CSV, out, _params(tmp_path, time_budget_s=0.001, mcq_mode="generate"),
                    metrics=metrics) == 0
    m = json.loads(metrics.read_text())
    assert [s["to"] for s in m["mode_switches"]] == ["fast", "fallback"] or m["mode_switches"][0]["to"] == "fast"
    assert m["modes"].get("fallback", 0) + m["modes"].get("fast", 0) > 0
    got = list(csv.DictReader(open(out, encoding="utf-8")))
    assert len(got) == 30 and all(_valid(q, r["Answer"]) for q, r in zip(load_questions(TEST_CSV), got))


def test_killed_predict_resumes_from_its_cache(model_dir, tmp_path):
    """SIGKILL mid-run, rerun: cached answers are reused and the submission equals an uninterrupted run's."""
    qs = load_questions(EVAL_CSV)[:40]
    test = _write_csv(tmp_path / "t.csv", [[q.id, q.text] for q in qs])
    params = _params(tmp_path, batch_size=1, mcq_mode="generate", max_tokens=8, mcq_max_tokens=8)
    cache = tmp_path / "cache"
    cmd = [sys.executable, "-m", "fsku", "predict", "--model", str(model_dir), "--test", str(test), "--out",
           str(tmp_path / "a.csv"), "--index", "", "--params", str(params), "--cache", str(cache)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    answers = cache / "answers.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if answers.exists() and len(answers.read_text().splitlines()) >= 3:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    done = len(answers.read_text().splitlines())
    assert 3 <= done < 40 and not (tmp_path / "a.csv").exists()
    metrics = tmp_path / "m.json"
    run(cmd + ["--metrics", str(metrics)], cwd=tmp_path, env=env)
    assert json.loads(metrics.read_text())["cached"] >= 3 and not answers.exists()  # spent once complete
    assert _predict(model_dir, test, tmp_path / "b.csv", params) == 0  # no cache
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()


def test_score_command(tmp_path, capsys):
    qs = load_questions(EVAL_CSV)
    mcq = [q for q in qs if q.is_mcq][:10]
    opn = [q for q in qs if not q.is_mcq][:4]
    preds = [[q.id, q.answer if i < 7 else str(int(q.answer) % len(q.options) + 1)] for i, q in enumerate(mcq)]
    preds += [[opn[0].id, opn[0].answer], [opn[1].id, ""], [opn[2].id, "관련 없는 답"]]  # opn[3] missing
    pred = _write_csv(tmp_path / "pred.csv", preds, header=("ID", "Answer"))
    gold_mcq = _write_csv(tmp_path / "mcq.csv", [[q.id, q.text, q.answer] for q in mcq],
                          header=("ID", "Question", "Answer"))
    gold_open = _write_csv(tmp_path / "open.csv", [[q.id, q.text, q.answer, ",".join(q.keywords)] for q in opn],
                           header=("ID", "Question", "Answer", "Keyword"))
    assert cli(["score", "--pred", str(pred), "--gold", str(gold_mcq), str(gold_open),
                "--similarity", "char-bigram"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["mcq_accuracy"] == pytest.approx(0.7)
    from fsku.scoring import char_ngram_cosine

    wrong = "관련 없는 답"
    third = 0.6 * char_ngram_cosine(wrong, opn[2].answer) + 0.4 * keyword_score(wrong, opn[2].keywords)
    expected_open = (0.6 + 0.4 * keyword_score(opn[0].answer, opn[0].keywords) + third) / 4
    assert res["open_score"] == pytest.approx(expected_open, abs=1e-3)
    assert res["total"] == pytest.approx(0.5 * res["mcq_accuracy"] + 0.5 * res["open_score"], abs=1e-3)
    assert res["missing"] == 1 and res["similarity_model"] == "char-bigram"
    dup = _write_csv(tmp_path / "dup.csv", preds[:2] + preds[:1], header=("ID", "Answer"))
    assert cli(["score", "--pred", str(dup), "--gold", str(gold_mcq), "--similarity", "char-bigram"]) == 1
    assert "duplicate ID" in capsys.readouterr().err


def test_score_command_with_the_project_encoder(tmp_path, capsys, tiny_encoder):
    opn = [q for q in load_questions(EVAL_CSV) if not q.is_mcq][:3]
    gold = _write_csv(tmp_path / "open.csv", [[q.id, q.text, q.answer, ",".join(q.keywords)] for q in opn],
                      header=("ID", "Question", "Answer", "Keyword"))
    pred = _write_csv(tmp_path / "pred.csv", [[q.id, q.answer] for q in opn], header=("ID", "Answer"))
    assert cli(["score", "--pred", str(pred), "--gold", str(gold), "--similarity", str(tiny_encoder)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["open_cosine"] == pytest.approx(1.0, abs=1e-4) and res["mcq_accuracy"] is None


@pytest.mark.skipif(not (SHARED / "fsku-sample").exists(), reason="../shared/fsku-sample not present")
def test_score_command_on_the_real_sample(tmp_path, capsys):
    """The real FSKU sample's answers scored against themselves: full marks on both halves."""
    mcq, opn = SHARED / "fsku-sample/mcq.csv", SHARED / "fsku-sample/open.csv"
    rows = [[q.id, q.answer] for path in (mcq, opn) for q in load_questions(path)]
    pred = _write_csv(tmp_path / "pred.csv", rows, header=("ID", "Answer"))
    assert cli(["score", "--pred", str(pred), "--gold", str(mcq), str(opn), "--similarity", "char-bigram"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["mcq_accuracy"] == 1.0 and res["open_cosine"] == pytest.approx(1.0) and res["missing"] == 0
