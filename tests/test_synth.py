"""The synth stage's parts: reading what the teacher wrote, building the options, every gate, the
spread over documents and key positions; and the stage itself on a tiny random-init teacher."""

import csv
import random
from collections import Counter

import pytest

from fsku.gen.config import DedupConfig
from fsku.questions import Question, parse_question
from fsku.synth import gate
from fsku.synth.select import plan, select_chunks
from fsku.synth.write import (
    Candidate,
    assemble,
    judge_task,
    numeric_distractors,
    parse_qa,
    parse_score,
    pool_distractors,
    task,
)

CHUNK = ("제11조(사고 시 책임) ① 수탁자는 위탁 업무와 관련하여 사고가 발생한 사실을 알게 된 때에는 지체 없이, "
         "늦어도 24시간 이내에 금융회사등에 통지하여야 한다.")


def test_parse_a_question_and_its_short_answer():
    c, why = parse_qa("질문: 수탁자는 사고를 안 때부터 몇 시간 이내에 통지하여야 하는가?\n정답: 24시간\n\n"
                      "질문: 두 번째 문제?\n정답: 다른 답", "mcq")
    assert why is None and c.stem.endswith("하는가?") and c.answer == "24시간"  # the first block only
    c, why = parse_qa("**질문:** 무엇을 하여야 하는가?\n**답변:** 지체 없이 통지하여야 합니다.\n"
                      "**키워드:** 통지, 24시간, 셋째", "open")
    assert why is None and c.answer == "지체 없이 통지하여야 합니다." and c.keywords == ["통지", "24시간"]
    assert parse_qa("수탁자는 통지하여야 한다.", "mcq") == (None, "no_question")
    assert parse_qa("질문: 무엇인가?", "open") == (None, "no_answer")
    assert parse_qa("질문: 정의는 무엇인가?\n정답: " + "가" * 60, "mcq") == (None, "answer_not_short")
    assert parse_qa("질문: 위탁할 수 있는가?\n정답: 있다.", "mcq") == (None, "yes_no_answer")
    for note in ("24시간 (제11조)\n해설: 제11조에 따름", "24시간 해설: 제11조에 따름", "24시간.\n\n추가 설명"):
        assert parse_qa(f"질문: 몇 시간 이내에 통지하는가?\n정답: {note}", "mcq")[0].answer == "24시간"
    c, _ = parse_qa("질문: 무엇을 하는가?\n답변: 통지하여야 합니다.\n키워드:\n- 통지\n- [24시간]", "open")
    assert c.keywords == ["통지", "24시간"]
    assert parse_qa("질문: 이 법은 언제 시행되었나?\n정답: 2025. 7. 1.", "mcq") == (None, "date_answer")
    c, _ = parse_qa("질문: 무엇인가?\n답변: 가상자산은 전자적 증표를 말한다.\n키워드: 가, 증표", "open")
    assert c.keywords == ["증표"]  # a one-letter keyword matches anything


def test_numeric_distractors_move_the_number_and_keep_the_unit():
    wrong = numeric_distractors("지체 없이 24시간", 4, random.Random(0))
    assert len(set(wrong)) == 4 and "지체 없이 24시간" not in wrong
    assert all(w.startswith("지체 없이 ") and w.endswith("시간") for w in wrong)
    assert numeric_distractors("지체 없이 24시간", 4, random.Random(0)) == wrong  # seeded
    people = numeric_distractors("1,000명", 6, random.Random(1))
    assert len(people) == 6 and all(("," in w) == (int(w[:-1].replace(",", "")) >= 1000) for w in people)
    assert numeric_distractors("접근매체", 3, random.Random(0)) == []
    assert sorted(numeric_distractors("1년", 4, random.Random(0))) == ["2년", "3년", "4년", "5년"]
    # a second number would stay in every option; a decimal has no usual neighbours; a share stays below 1
    assert numeric_distractors("24시간 (제11조)", 3, random.Random(0)) == []
    assert numeric_distractors("0.5%", 3, random.Random(0)) == []
    assert all(int(w.split()[-1]) < 5 for w in numeric_distractors("5분의 3", 3, random.Random(0)))


@pytest.mark.parametrize("text, score", [("점수: 8", 8), ("점수：10점", 10), ("7", 7), ("점수: 0", None),
                                         ("**점수**: 8", 8), ("점수는 6점입니다.", 6), ("평가: 7점", 7),
                                         ("좋은 문제입니다.", None), ("점수: 12", None)])
def test_parse_score(text, score):
    assert parse_score(text) == score


@pytest.mark.parametrize("text, pick", [("정답: 72시간\n\n이유는", 2), ("정답: 2 72시간", 2), ("정답은 (2)입니다", 2),
                                        ("3", 3), ("정답: 5", None), ("모르겠습니다", None), ("정답: 100시간", 4)])
def test_picked_reads_the_number_or_the_option_named(text, pick):
    assert gate.picked(text, ["48시간", "72시간", "50시간", "100시간"]) == pick
    assert gate.picked("정답: 5년", ["3년", "5년", "7년", "10년", "1년"]) == 2  # the text before the number


def test_judge_task_shows_the_chunk_the_question_and_the_key():
    text = judge_task(_mcq(), CHUNK)
    assert CHUNK in text and "1 12시간" in text and "[정답]\n2 24시간" in text and "1~10점" in text


def test_pool_distractors_are_other_answers_of_the_same_kind():
    here, there = ["금융위원회", "대통령령", "전기통신사업법", "5년"], ["한국인터넷진흥원", "총리령", "금융감독원장"]
    wrong = pool_distractors("전기통신사업", [here, there], 3, random.Random(0))
    assert "전기통신사업법" not in wrong and "5년" not in wrong  # it contains the key; a number
    assert {"금융위원회", "대통령령"} <= set(wrong)  # the same document's first
    assert pool_distractors("전기통신사업", [here, there], 3, random.Random(0)) == wrong
    assert pool_distractors("전기통신사업", [here], 3, random.Random(0)) == []  # too few qualify
    assert pool_distractors("3년", [["제12조", "13개", "5년", "10년", "1년"]], 3, random.Random(0)) != []
    assert set(pool_distractors("3년", [["제12조", "13개", "5년", "10년", "1년"]], 3, random.Random(0))) \
        == {"5년", "10년", "1년"}


@pytest.mark.parametrize("position", [1, 2, 3, 4])
def test_assemble_puts_the_key_where_asked(position):
    c = Candidate("mcq", "몇 시간 이내에 통지하여야 하는가?", "24시간")
    assert assemble(c, ["12시간", "12 시간", "48시간", "72시간", "96시간"], 4, position) is None
    assert c.key == position and c.options[position - 1] == "24시간"
    assert c.options.count("12시간") == 1 and "12 시간" not in c.options  # spaces aside, a repeat is dropped
    assert parse_question(c.question_text()) == (c.stem, c.options)
    assert assemble(Candidate("mcq", "몇?", "24시간"), ["24 시간", "12시간"], 4, 1) == "too_few_distractors"
    long_key = Candidate("mcq", "정의는?", "사기이용계좌의 채권소멸 절차를 거쳐 피해자에게 지급하는 금전")
    assert assemble(long_key, ["매주", "매일", "수시로"], 4, 1) == "key_stands_out"


ASK = "수탁자는 사고를 안 때부터 몇 시간 이내에 통지하여야 하는가?"
OPEN_ASK = "수탁자는 사고가 나면 어떻게 하여야 하는가?"
OPEN_ANSWER = "지체 없이, 늦어도 24시간 이내에 금융회사등에 통지하여야 합니다."


def _mcq(stem=ASK, options=("12시간", "24시간", "48시간", "72시간"), key=2):
    return Candidate("mcq", stem, options[min(key, len(options)) - 1], list(options), key)


@pytest.mark.parametrize("candidate, reason", [
    (_mcq(), None),
    (_mcq(options=("12시간", "24시간", "24 시간", "72시간")), "options_not_distinct"),
    (_mcq(stem="수탁자는 24시간 이내에 통지하는데 몇 시간 이내인가?"), "stem_gives_answer"),
    (_mcq(stem="수탁자는 사고를 안 때부터 통지하여야 한다."), "stem_not_a_question"),
    (_mcq(stem="How many hours?"), "stem_no_hangul"),
    (_mcq(key=5), "key_out_of_range"),
    (Candidate("open", OPEN_ASK, OPEN_ANSWER, keywords=["통지"]), None),
    (Candidate("open", OPEN_ASK, OPEN_ANSWER), "no_keywords"),
    (Candidate("open", OPEN_ASK, "통지", keywords=["통지"]), "answer_too_short"),
])
def test_format_gate(candidate, reason):
    assert gate.format_problem(candidate, CHUNK) == reason


def test_a_question_about_the_worked_example_instead_of_its_chunk_is_rejected():
    about_example = Candidate("open", "비밀번호를 여러 번 잘못 입력하면 어떻게 처리하여야 하는가?",
                              "지체 없이 금융회사등에 통지하여야 합니다.", keywords=["통지"])
    assert gate.format_problem(about_example, CHUNK) == "copies_example"
    assert gate.format_problem(about_example, CHUNK + " 비밀번호를 잘못 입력한 경우") is None  # its own chunk's terms


def test_grounding_is_how_much_of_the_key_the_chunk_holds():
    assert gate.grounding(_mcq(), CHUNK) == 1.0
    assert gate.grounding(Candidate("mcq", "몇?", "100분의 70"), CHUNK) < 0.3
    assert 0.6 < gate.grounding(Candidate("open", "?", "늦어도 24시간 이내에 금융회사에 통지해야 한다"), CHUNK) < 1.0


def test_near_duplicates_of_an_evaluation_question_are_leaks():
    held = [Question("test.csv:TEST_1", ASK, "", [])]  # an id that sorts after SYNTH_
    ours = [gate.as_question(Candidate("open", ASK, "a"), "SYNTH_0"),
            gate.as_question(_mcq(stem="금융회사의 정보보호최고책임자는 누구로 지정하여야 하는가?"), "SYNTH_1"),
            gate.as_question(_mcq(stem="금융회사의 정보보호최고책임자는 누구로 지정하여야 하는가?"), "SYNTH_2")]
    assert gate.near_duplicates(held, ours, DedupConfig()) == {
        "SYNTH_0": {"rejected": "leak", "duplicate_of": "test.csv:TEST_1"},
        "SYNTH_2": {"rejected": "duplicate", "duplicate_of": "SYNTH_1"}}


def test_even_positions_spreads_the_keys_and_keeps_their_text():
    cands = [_mcq(key=1) for _ in range(12)]
    gate.even_positions(cands, seed=0)
    assert Counter(c.key for c in cands) == {1: 3, 2: 3, 3: 3, 4: 3}
    assert all(c.options[c.key - 1] == "12시간" and sorted(c.options) == ["12시간", "24시간", "48시간", "72시간"]
               for c in cands)


def _chunks():
    out = []
    for d in range(3):
        for s in range(4):
            for i in range(3):
                out.append({"chunk_id": f"{d}{s}{i}", "source": f"doc{d}.pdf", "section": f"제{s}장 > 제{i}조",
                            "text": "가" * (200 if i else 50)})
    return out


def test_select_spreads_over_documents_and_sections():
    picked = select_chunks(_chunks(), per_document=4, min_chars=100, seed=0)
    assert Counter(c["source"] for c in picked) == {"doc0.pdf": 4, "doc1.pdf": 4, "doc2.pdf": 4}
    for d in range(3):  # four sections, one chunk each; the short chunks never
        chapters = sorted(c["section"][:3] for c in picked if c["source"] == f"doc{d}.pdf")
        assert chapters == ["제0장", "제1장", "제2장", "제3장"]
    assert all(c["chunk_id"][2] != "0" for c in picked)
    assert select_chunks(_chunks(), 4, 100, seed=0) == picked


def test_plan_kinds_and_positions():
    tasks = plan(select_chunks(_chunks(), 4, 100, 0) * 4, open_share=0.25, five_option_share=0.0, seed=0)
    assert Counter(t["kind"] for t in tasks) == {"mcq": 36, "open": 12}
    assert Counter(t["position"] for t in tasks if t["kind"] == "mcq") == {1: 9, 2: 9, 3: 9, 4: 9}
    assert "제" in task("mcq", _chunks()[1]) and "정답:" in task("mcq", _chunks()[1])


def test_the_stage_on_a_tiny_teacher(tmp_path, root, qwen_tokenizer):
    """A random-init teacher writes nothing in the layout: the stage stops with the reject counts and
    writes no out (the previous ones stay); with per_document 0 it writes an empty question file
    without loading the teacher."""
    import json
    import subprocess
    import sys

    import torch
    import yaml

    from fsku.models.load import save_model

    from conftest import tiny_qwen2

    save_model(tiny_qwen2(layers=2, hidden=64, heads=2, vocab=151936).to(torch.bfloat16), qwen_tokenizer,
               tmp_path / "teacher")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["synth"].update(per_document=2, max_tokens=16)
    params["gen"].update(backend="transformers", max_model_len=768)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True))
    chunks = tmp_path / "chunks.jsonl"
    chunks.write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in _chunks()), encoding="utf-8")
    out, cand, met = tmp_path / "q.csv", tmp_path / "c.jsonl", tmp_path / "m.json"
    out.write_text("ID,Question,Answer,Keyword\nSYNTH_0000,earlier,1,\n", encoding="utf-8")
    cmd = [sys.executable, "-m", "stages.synth", "--params", str(tmp_path / "params.yaml"), "--chunks", str(chunks),
           "--teacher", str(tmp_path / "teacher"), "--out", str(out), "--candidates", str(cand), "--metrics", str(met),
           "--partial", str(tmp_path / "partial")]
    failed = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    assert failed.returncode == 1 and "the gate rejected all 6 candidates ({'format:" in failed.stderr
    assert "earlier" in out.read_text() and not cand.exists() and not met.exists()

    params["synth"]["per_document"] = 0
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True))
    subprocess.run([*cmd[:-6], "--teacher", str(tmp_path / "absent"), *cmd[-6:]], cwd=root, check=True,
                   capture_output=True)
    assert list(csv.reader(out.open())) == [["ID", "Question", "Answer", "Keyword"]]
    assert json.loads(met.read_text())["candidates"] == 0

    (tmp_path / "empty.jsonl").write_text("")
    empty = subprocess.run([*cmd[:6], str(tmp_path / "empty.jsonl"), *cmd[7:]], cwd=root, capture_output=True,
                           text=True)
    assert empty.returncode == 0  # per_document 0 asks for nothing
    params["synth"]["per_document"] = 2
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True))
    empty = subprocess.run([*cmd[:6], str(tmp_path / "empty.jsonl"), *cmd[7:]], cwd=root, capture_output=True,
                           text=True)
    assert empty.returncode == 1 and "empty.jsonl: no chunks to write questions from" in empty.stderr


def test_the_source_switch(tmp_path, root):
    from stages.prompts import training_questions

    bank = str(root / "data/raw/questions/train.csv")
    synth = tmp_path / "synth.csv"
    synth.write_text("ID,Question,Answer,Keyword\n", encoding="utf-8")
    with pytest.raises(ValueError, match="synth.csv: no synthetic question passed the gate"):
        training_questions("synth", bank, str(synth))
    assert len(training_questions("bank", bank, str(synth))) == 170
    synth.write_text('ID,Question,Answer,Keyword\nSYNTH_0000,"몇 시간 이내인가?\n1 12시간\n2 24시간",2,\n',
                     encoding="utf-8")
    both = training_questions("both", bank, str(synth))
    assert len(both) == 171 and both[-1].id == "SYNTH_0000" and both[-1].options == ["12시간", "24시간"]
    assert [q.id for q in training_questions("synth", bank, str(synth))] == ["SYNTH_0000"]
    synth.write_text("ID,Question,Answer,Keyword\nTRAIN_A000,몇 회인가?,3,\n", encoding="utf-8")
    with pytest.raises(ValueError, match="ID TRAIN_A000 is also in"):
        training_questions("both", bank, str(synth))


class ScriptedTeacher:
    """The teacher at the edge of the test: crafted generations, picked by a phrase of the prompt (its
    chunk's), so asked a question with its chunk it answers with the text it wrote from it, and
    without the chunk it does not know."""
    name = "scripted"

    def __init__(self, tokenizer, script: dict[str, str]):
        self.tokenizer, self.script = tokenizer, script

    def generate(self, prompts, sp, seed, max_time=None):
        out = []
        for p in prompts:
            text = next((t for phrase, t in self.script.items() if phrase in p), "모르겠습니다.")
            out.append({"text": text, "n_tokens": len(text), "finish_reason": "stop", "prompt_tokens": len(p),
                        "prompt_truncated": False})
        return out



def test_the_gate_on_crafted_generations(tmp_path, qwen_tokenizer):
    """Each crafted bad generation is rejected at its gate and counted; the good ones are kept, the
    multiple choice after the teacher named its key in the round trip."""
    import json

    from fsku.gen.config import GenConfig
    from fsku.synth.config import SynthConfig
    from fsku.synth.pipeline import Teacher, tally, write_and_gate

    chunk = lambda i, text: {"chunk_id": f"c{i}", "source": f"doc{i}.pdf", "section": "제1장", "text": text}  # noqa: E731
    chunks = {c["chunk_id"]: c for c in [
        chunk(0, CHUNK),
        chunk(1, "제3조(보관) 금융회사는 거래기록을 5년간 보관하여야 한다."),
        chunk(2, "제4조(점검) 금융회사는 정보보호 체계를 연 1회 이상 점검하여야 한다. 점검 결과는 이사회에 보고한다."),
        chunk(3, "제5조(교육) 금융회사는 임직원에게 정보보호 교육을 연 2회 이상 실시하여야 한다. 결과는 기록한다."),
        chunk(4, "제6조(훈련) 금융회사는 모의훈련을 연 1회 이상 실시하여야 한다. 훈련 결과는 보고한다."),
        chunk(5, "제7조(신고) 이용자는 분실 사실을 안 때에 지체 없이 금융회사에 신고하여야 한다.")]}
    tasks = [{"id": "SYNTH_0000", "chunk_id": "c0", "kind": "mcq", "n_options": 4, "position": 3},
             {"id": "SYNTH_0001", "chunk_id": "c1", "kind": "mcq", "n_options": 4, "position": 1},
             {"id": "SYNTH_0002", "chunk_id": "c2", "kind": "open"},
             {"id": "SYNTH_0003", "chunk_id": "c3", "kind": "open"},
             {"id": "SYNTH_0004", "chunk_id": "c4", "kind": "open"},
             {"id": "SYNTH_0005", "chunk_id": "c5", "kind": "mcq", "n_options": 4, "position": 2}]
    script = {
        "제11조(사고 시 책임)": "질문: 수탁자는 사고를 안 때부터 몇 시간 이내에 통지하여야 하는가?\n정답: 24시간",
        "제3조(보관)": "금융회사는 거래기록을 보관합니다.",  # not in the layout
        "제4조(점검)": "질문: 금융회사는 정보보호 체계를 얼마나 자주 점검하여야 하는가?\n"
                      "답변: 연 1회 이상 점검하고 결과를 이사회에 보고하여야 합니다.\n키워드: 연 1회, 이사회",
        "제5조(교육)": "질문: 금융회사는 정보보호 체계를 얼마나 자주 점검하여야 하는가?\n"  # the same question again
                      "답변: 정보보호 교육을 연 2회 이상 실시하여야 합니다.\n키워드: 교육, 연 2회",
        "제6조(훈련)": "질문: 금융회사는 모의훈련을 얼마나 자주 실시하여야 하는가?\n"
                      "답변: 모의훈련을 연 1회 이상 실시하고 결과를 보고하여야 합니다.\n키워드: 모의훈련, 연 1회",
        # a key of its own kind with no other answer like it to borrow as a wrong option
        "제7조(신고)": "질문: 이용자는 분실 사실을 안 때에 누구에게 신고하여야 하는가?\n정답: 금융감독원",
    }
    held_out = [Question("EVAL_9", "금융회사는 모의훈련을 얼마나 자주 실시하여야 하는가?", "", [])]
    teacher = Teacher(ScriptedTeacher(qwen_tokenizer, script), "scripted", "0" * 16, tmp_path / "partial")
    cfg = SynthConfig()
    rows = write_and_gate(tasks, chunks, teacher, cfg, GenConfig(batch_size=4), held_out)
    again = write_and_gate(tasks, chunks, teacher, cfg, GenConfig(batch_size=4), held_out)  # resumed from partial
    assert json.dumps(again, ensure_ascii=False) == json.dumps(rows, ensure_ascii=False)
    verdict = {r["id"]: r["rejected"] for r in rows}
    assert verdict == {"SYNTH_0000": None, "SYNTH_0001": "format:no_question", "SYNTH_0002": None,
                       "SYNTH_0003": "duplicate", "SYNTH_0004": "leak", "SYNTH_0005": "format:too_few_distractors"}
    kept = {r["id"]: r for r in rows if r["kept"]}
    mcq = kept["SYNTH_0000"]
    assert mcq["round_trip"] and parse_question(mcq["question"])[1][int(mcq["answer"]) - 1] == "24시간"
    counts = tally(rows, cfg)
    assert counts["kept"] == 2 and counts["rejected"] == {"duplicate": 1, "format:no_question": 1,
                                                          "format:too_few_distractors": 1, "leak": 1}
    assert counts["round_trip_checked"] == 1 and counts["round_trip_right"] == 1 and counts["closed_book_right"] == 0
