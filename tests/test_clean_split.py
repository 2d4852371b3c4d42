import random

import pytest

from fsku.chunking.clean import clean_text, join_lines, normalize_money
from fsku.chunking.split import article_title, split_spans


@pytest.mark.parametrize("raw, clean", [
    ("１，０００만원을 초과", "1,000만 원을 초과"),
    ("3억원", "3억 원"),
    ("3억 원", "3억 원"),
    ("1000 만 원", "1,000만 원"),
    ("₩5000", "5,000원"),
    ("10000 원", "10,000원"),
    ("1억 5000만원", "1억 5,000만 원"),
    ("2024년 3월 1일", "2024년 3월 1일"),
    ("① 금융회사는", "① 금융회사는"),  # NFKC would turn ① into 1
    ("ＡＢＣ　테스트。", "ABC 테스트."),
    ("접근\u200b매체  는 ,", "접근매체 는,"),
    ("cafe\u0301", "café"),
])
def test_clean_text(raw, clean):
    assert clean_text(raw) == clean


def test_money_forms_converge():
    forms = ["1,000만원", "1000만 원", "1,000 만 원", "1000만원"]
    assert len({normalize_money(f) for f in forms}) == 1


def test_join_lines_hyphenation_and_spaces():
    assert join_lines(["infor-", "mation 보호"]) == "information 보호"
    assert join_lines(["전자금융거래의 안전성을", "확보한다."]) == "전자금융거래의 안전성을 확보한다."
    assert join_lines(["e-", "Mail"]) == "e- Mail"  # capital after the hyphen: a real hyphen


def test_split_prefers_korean_sentence_endings():
    text = "금융회사는 접근매체를 발급한다. 이용자는 이를 관리하여야 한다. 분실 시 즉시 신고하여야 한다."
    spans = split_spans(text, size=30, overlap=0)
    pieces = [text[s:e] for s, e in spans]
    assert all(p.endswith("다.") for p in pieces), pieces


def test_split_overlap_carries_context():
    text = " ".join(f"문장{i}은 여기서 끝난다." for i in range(20))
    spans = split_spans(text, size=60, overlap=20)
    assert len(spans) > 2
    assert any(spans[i + 1][0] < spans[i][1] for i in range(len(spans) - 1))


def test_split_properties_random():
    rng = random.Random(0)
    for _ in range(400):
        text = "".join(rng.choice("가나 다.\n") for _ in range(rng.randint(0, 300)))
        size = rng.randint(1, 40)
        spans = split_spans(text, size, rng.randint(0, size))
        assert all(0 < e - s <= size for s, e in spans)
        covered = set()
        for s, e in spans:
            covered.update(range(s, e))
        assert all(i in covered for i, c in enumerate(text) if not c.isspace())
        assert all(a[0] <= b[0] and a[1] < b[1] for a, b in zip(spans, spans[1:]))


def test_split_with_token_length():
    text = "가나다 " * 50
    spans = split_spans(text, size=10, overlap=2, length=lambda s: len(s.split()))
    assert all(len(text[s:e].split()) <= 10 for s, e in spans)


def test_article_title():
    assert article_title("제5조(접근매체의 관리) ① 금융회사는") == "제5조(접근매체의 관리)"
    assert article_title("제 12 조의 2 (특례) 내용") == "제12조의2(특례)"
    assert article_title("제5조에 따른 신고") is None
