import pytest

from fsku.questions import Question
from fsku.scoring import (
    char_loop,
    char_ngram_cosine,
    extract_choice,
    format_problem,
    get_scorer,
    keyword_score,
    loop_reason,
    non_answer,
    open_answer_problem,
    reference_score,
)


@pytest.mark.parametrize("text, n, expected", [
    ("정답: 3", 4, 3), ("정답은 (2)번입니다.", 5, 2), ("정답 7, 아니 1", 4, 1), ("보기 5가 맞고 정답은 4", 5, 4),
    ("2024년 기준으로 3번이 맞다", 4, 3), ("정답은 제5조", 4, None), ("모르겠다", 4, None), ("10번과 12번", 9, None),
])
def test_extract_choice(text, n, expected):
    assert extract_choice(text, n) == expected


def test_keyword_score_follows_the_benchmark_rule():
    assert keyword_score("OTP와 보안카드", []) == 1.0
    assert keyword_score("일회용 비밀번호(OTP)를 쓴다", ["otp", "보안카드"]) == 0.5
    assert keyword_score("분리된 망에서 내부 업무", ["내부 망 분리"]) == 1.0  # every word appears
    assert keyword_score("망이 없다", ["내부 망 분리"]) == 0.0


def test_reference_score():
    mcq = Question("Q", "", "옳은 것은?", ["가", "나", "다", "라"], answer="2")
    assert reference_score(mcq, "정답: 2") == 1.0 and reference_score(mcq, "정답: 3") == 0.0
    open_q = Question("O", "", "설명하세요.", [], answer="접근매체 이용을 즉시 정지한다.", keywords=["접근매체"])
    good, bad = reference_score(open_q, "접근매체의 이용을 즉시 정지한다."), reference_score(open_q, "모른다")
    assert 0.9 < good <= 1.0 and bad < 0.1
    assert reference_score(Question("N", "", "문항", []), "답") is None
    assert char_ngram_cosine("가나다", "가나다") == pytest.approx(1.0) and char_ngram_cosine("", "가") == 0.0


def test_get_scorer():
    assert get_scorer("reference") is reference_score
    assert get_scorer("fsku.scoring:keyword_score") is keyword_score
    with pytest.raises(ValueError, match="unknown scorer"):
        get_scorer("bleu")
    with pytest.raises(ValueError, match="cannot be loaded"):
        get_scorer("fsku.scoring:nope")


@pytest.mark.parametrize("text, expected", [
    ("정당" + "당" * 60, "repetition"),            # a loop inside one word: no word 4-gram sees it
    ("정답: 3 " + "가나" * 20, "repetition"),
    ("금액은 1,000,000원이며 보고 기한은 10일이다.", None),
    ("접근매체를 분실하면 즉시 금융회사에 통지한다.", None),
    ("아아아아아아아아 접근매체를 분실하면 즉시 금융회사에 통지하고 이용을 정지한다.", None),  # a short run
])
def test_char_loop(text, expected):
    assert char_loop(text) == expected
    assert open_answer_problem(text) == expected
    assert loop_reason(text) is None  # pairs keeps such a student answer as the rejected side


QUESTION = "클라우드 서비스 제공자에게 장애가 발생하더라도 금융회사가 취해야 할 대응 방안을 기술하세요."


@pytest.mark.parametrize("text, expected", [
    ("[질문]", "too_short"), ("1.2 용어의 정의", "too_short"), ("14일 이내", "too_short"),
    ("제공자에게 장애가 발생하더라도 금융회사가 취해야 할 대응 방안을 기술하세요.", "echo"),
    ("[3] 전자서명 및 인증업무 운영 규정 (학습용 예시 문서) · 제6장 이용자 보호 > 제15조(손해배상)", "source_label"),
    ("[1] 금융분야 개인정보 보호 규정 (학습용 예시 문서) · 제6장 개인정보의 파기.", "source_label"),
    ("업무연속성 계획을 수립하고 주요 데이터는 물리적으로 떨어진 센터에 이중으로 백업한다.", None),
    ("장애가 발생하더라도 업무를 지속할 수 있도록 업무연속성 계획을 수립하여야 한다.", None),  # shares words, answers
])
def test_non_answer(text, expected):
    assert non_answer(text, QUESTION) == expected
    assert format_problem(text, "open", question=QUESTION) == expected
    assert format_problem(text, "open") is None  # without the question (sft's filter): only open_answer_problem
