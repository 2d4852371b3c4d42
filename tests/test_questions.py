import csv

import pytest

from fsku.questions import load_questions, parse_question

from conftest import SHARED


@pytest.mark.parametrize("text, n_options", [
    ("다음 중 옳은 것은?\n1 가\n2 나\n3 다\n4 라", 4),
    ("다음 중 옳은 것은?\r\n1  가 \r\n2 나\r\n3 다\r\n4 라\r\n5 마\r\n", 5),
    ("둘 중 하나는?\n1 예\n2 아니오", 2),
    ("아홉 개?\n" + "\n".join(f"{i} 보기{i}" for i in range(1, 10)), 9),
    ("설명하세요.", 0),
    ("다음 조문을 보라.\n1 첫째 조항\n2 둘째 조항\n이 조문의 취지를 설명하세요.", 0),  # numbered lines inside the text
    ("번호가 2부터?\n2 나\n3 다", 0),
    ("건너뛴 번호?\n1 가\n3 다", 0),
    ("1 가\n2 나", 0),  # no stem
])
def test_parse_question(text, n_options):
    stem, options = parse_question(text)
    assert len(options) == n_options and stem
    if n_options:
        assert options[0] in ("가", "예", "보기1") and not stem.endswith("\n")


def _write(path, rows, header=("ID", "Question"), encoding="utf-8"):
    with open(path, "w", encoding=encoding, newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_load_questions_errors_name_row_and_column(tmp_path):
    ok = _write(tmp_path / "ok.csv", [["Q1", "질문?\n1 가\n2 나"], ["Q2", "설명하세요"]], encoding="utf-8-sig")
    qs = load_questions(ok)  # a BOM is fine
    assert [q.id for q in qs] == ["Q1", "Q2"] and qs[0].is_mcq and not qs[1].is_mcq
    with pytest.raises(ValueError, match="missing column.*Question"):
        load_questions(_write(tmp_path / "a.csv", [["Q1", "x"]], header=("ID", "Text")))
    with pytest.raises(ValueError, match="row 3, column Question: empty"):
        load_questions(_write(tmp_path / "b.csv", [["Q1", "x"], ["Q2", "  "]]))
    with pytest.raises(ValueError, match="row 3, column ID: duplicate ID Q1"):
        load_questions(_write(tmp_path / "c.csv", [["Q1", "x"], ["Q1", "y"]]))
    with pytest.raises(ValueError, match="row 2, column Question: 20001 characters"):
        load_questions(_write(tmp_path / "d.csv", [["Q1", "가" * 20001]]))
    bad = tmp_path / "e.csv"
    bad.write_bytes("ID,Question\nQ1,질문\n".encode("cp949"))
    with pytest.raises(ValueError, match="not UTF-8"):
        load_questions(bad)


def test_training_question_bank(root):
    qs = load_questions(root / "data/raw/questions/train.csv")
    n = {k: sum(len(q.options) == k for q in qs) for k in (0, 4, 5)}
    assert len(qs) >= 150 and n[4] >= 30 and n[5] >= 30 and n[0] >= 20
    for q in qs:
        if q.is_mcq:
            assert 1 <= int(q.answer) <= len(q.options), q.id
        else:
            assert q.answer and q.keywords, q.id


@pytest.mark.skipif(not (SHARED / "fsku-sample").exists(), reason="../shared/fsku-sample not present")
def test_real_fsku_sample_parses():
    mcq = load_questions(SHARED / "fsku-sample/mcq.csv")
    assert mcq and all(len(q.options) in (4, 5) and 1 <= int(q.answer) <= len(q.options) for q in mcq)
    open_ = load_questions(SHARED / "fsku-sample/open.csv")
    assert open_ and all(not q.is_mcq for q in open_)


def test_gold_files_name_a_repeated_id_and_a_missing_answer(tmp_path):
    """The scorer's and the eval stage's gold (``load_answered``): an ID in two files, or a question
    without its Answer, stops with the file and the IDs named."""
    from fsku.questions import load_answered

    a, b, c = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"
    a.write_text("ID,Question,Answer\nQ1,접근매체란?,접근 수단\nQ2,보기 1 2,1\n", encoding="utf-8")
    b.write_text("ID,Question,Answer\nQ3,설명하세요,답\nQ1,다시,답\n", encoding="utf-8")
    c.write_text("ID,Question,Answer\nQ4,설명하세요,\n", encoding="utf-8")
    assert [q.id for q in load_answered([a])] == ["Q1", "Q2"]
    with pytest.raises(ValueError, match=r"b.csv: ID Q1 is also in .*a.csv"):
        load_answered([a, b])
    with pytest.raises(ValueError, match=r"c.csv: no Answer to score against for Q4"):
        load_answered([a, c])
