"""What the teacher is asked to write from one chunk, and reading what it wrote.

Multiple choice is written answer first. Asked for a whole question with numbered options, the 1.5B
instruct teacher wrote five copies of one sentence as the options, or none at all; asked for a
question and its short answer, it writes both well. The wrong options then come from the answer
itself when it holds a number (``numeric_distractors``: the number moved to usual values near it),
else from the other questions' answers, the same document's first (``pool_distractors``). Asked for
wrong answers itself, the teacher repeated the key or the example's (0 usable of 33 on two corpora,
benchmarks/RESULTS.md), so it is not asked. The teacher answers
in a plain-text layout (``질문:``, ``정답:``; ``답변:``, ``키워드:``), which it follows more reliably than
JSON; ``parse_*`` read it or name why not: the format gate's reasons.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field

# one worked example, a made-up rule (no corpus's text): without one the teacher wrote statements
# instead of questions
EXAMPLE_DOC = ("제7조(비밀번호 관리) ① 이용자는 비밀번호를 분기마다 1회 이상 변경하여야 한다.\n"
               "② 금융회사는 이용자가 비밀번호를 연속하여 5회 잘못 입력한 경우 접근을 차단하여야 한다.")
HEAD = "금융·정보보호 규정 문서의 일부를 읽고, 그 내용만으로 답할 수 있는 {what} 1개를 한국어로 만드세요.\n"
TAIL = ("예시와 같은 형식만 출력하세요.\n\n[예시 문서]\n" + EXAMPLE_DOC
        + "\n[예시 출력]\n{example}\n\n[문서]\n{title}\n{text}\n[출력]")
QA_TASK = (HEAD.format(what="문제") + "조건: 정답은 문서에 나오는 짧은 말(숫자, 기간, 용어 등)이어야 하며, "
           "문제 안에 정답을 쓰지 마세요. " + TAIL.replace("{example}", "질문: 이용자가 비밀번호를 연속하여 몇 회 "
           "잘못 입력하면 금융회사가 접근을 차단하여야 하는가?\n정답: 5회"))
OPEN_TASK = (HEAD.format(what="서술형 문제") + "조건: 답변은 사람이 쓴 것처럼 1~3문장으로 요약하고, 키워드는 답변 속 "
             "핵심 용어 1~2개입니다. " + TAIL.replace("{example}", "질문: 이용자가 비밀번호를 여러 번 잘못 입력하면 "
             "금융회사는 어떻게 하여야 하는가?\n답변: 연속하여 5회 잘못 입력하면 금융회사는 그 이용자의 접근을 "
             "차단하여야 합니다.\n키워드: 5회, 접근 차단"))
JUDGE_TASK = (
    "다음은 규정 문서로 만든 {what}입니다. 아래 기준으로 1~10점 중 하나로 평가하세요.\n"
    "기준: 문서만으로 답할 수 있다. 정답이 문서와 맞고 하나뿐이다. 문제가 자연스러운 한국어이다. "
    "금융·정보보호 업무에 쓸모 있는 내용이다.\n\"점수: N\" 형식으로만 답하세요.\n\n"
    "[문서]\n{text}\n\n[문제]\n{question}\n\n[정답]\n{answer}")
_SCORE = re.compile(r"(?:점수|평가)\s*(?:는|은)?\s*[:：]?\s*(10|[1-9])(?!\d)|^\s*(10|[1-9])(?!\d)")
_LABEL = r"\**\s*{}\s*\**\s*[:：]\s*\**"
_QUESTION = re.compile(_LABEL.format("(?:질문|문제)"))
_ANSWER_TEXT = re.compile(_LABEL.format("(?:답변|정답|답)"))
_KEYWORDS = re.compile(_LABEL.format("(?:키워드|핵심\\s*용어)"))
_NUMBER = re.compile(r"\d+(?:,\d{3})*(?:\.\d+)?")
_NOTE = re.compile(r"\s+(?:해설|설명|이유|근거|참고)\s*[:：]")
_CITATION = re.compile(r"\s*[\(\[]\s*(?:제\s*\d+\s*조|[^)\]]*법)[^)\]]*[\)\]]\s*$")
# an enactment or amendment date ("2020. 2. 4."): trivia of the document's header, not its content
_DATE = re.compile(r"(?:19|20)\d\d\s*[.년]\s*\d{1,2}\s*[.월]")
YES_NO = {"있다", "없다", "있습니다", "없습니다", "예", "아니오", "아니요", "yes", "no", "o", "x"}
MAX_SHORT_ANSWER = 40   # characters: a longer "short answer" is a sentence, not an option


@dataclass
class Candidate:
    """One teacher-written question: ``options`` and ``key`` (1-based) for multiple choice,
    ``answer`` and ``keywords`` for open-ended (for multiple choice ``answer`` is the key's text)."""
    kind: str
    stem: str
    answer: str
    options: list[str] = field(default_factory=list)
    key: int = 0
    keywords: list[str] = field(default_factory=list)

    def question_text(self) -> str:
        """The FSKU ``Question`` cell: the stem, then ``N option`` lines for multiple choice."""
        return self.stem + "".join(f"\n{i} {o}" for i, o in enumerate(self.options, 1))

    def answer_cell(self) -> str:
        return str(self.key) if self.kind == "mcq" else self.answer


def title_of(chunk: dict) -> str:
    return " · ".join(x for x in (chunk.get("title") or chunk.get("source", ""), chunk.get("section") or "") if x)


def task(kind: str, chunk: dict) -> str:
    """The teacher's first instruction for one chunk: a question and its short answer (multiple
    choice), or a question, a reference answer and keywords (open-ended)."""
    return (QA_TASK if kind == "mcq" else OPEN_TASK).format(title=title_of(chunk), text=chunk["text"])


def judge_task(c: Candidate, chunk_text: str) -> str:
    """The rubric the teacher scores a candidate by (the design's quality score, 1-10)."""
    answer = f"{c.key} {c.answer}" if c.kind == "mcq" else c.answer
    return JUDGE_TASK.format(what="객관식 문제" if c.kind == "mcq" else "서술형 문제", text=chunk_text,
                             question=c.question_text(), answer=answer)


def parse_score(text: str) -> int | None:
    m = _SCORE.search(text.replace("*", ""))
    return int(m.group(1) or m.group(2)) if m else None


def _one_line(text: str) -> str:
    return " ".join(text.split()).strip(" *\"'")


def _first_block(text: str) -> str:
    """Up to a second ``질문:``: the teacher sometimes goes on writing more questions."""
    m = _QUESTION.search(text)
    if not m:
        return ""
    nxt = _QUESTION.search(text, m.end())
    return text[m.end():nxt.start() if nxt else len(text)]


def parse_qa(text: str, kind: str) -> tuple[Candidate | None, str | None]:
    """(candidate without options yet, None), or (None, reason) when the text is not in the layout."""
    body = _first_block(text)
    if not body:
        return None, "no_question"
    ans = _ANSWER_TEXT.search(body)
    if not ans:
        return None, "no_answer"
    stem = _one_line(body[:ans.start()])
    rest = body[ans.end():]
    kw = _KEYWORDS.search(rest)
    answer = _one_line(rest[:kw.start()] if kw else rest)
    if not stem:
        return None, "empty_question"
    if not answer:
        return None, "empty_answer"
    if kind == "mcq":  # its first line, without a note or a citation after it ("24시간 (제11조)")
        first = next((x for x in (rest[:kw.start()] if kw else rest).splitlines() if x.strip()), "")
        answer = _CITATION.sub("", _NOTE.split(_one_line(first))[0]).strip().rstrip(".")
        if not answer:
            return None, "empty_answer"
        if len(answer) > MAX_SHORT_ANSWER:
            return None, "answer_not_short"
        if _norm(answer) in YES_NO:
            return None, "yes_no_answer"
        if _DATE.search(answer):
            return None, "date_answer"
        return Candidate("mcq", stem, answer), None
    tail = [x for x in rest[kw.end():].splitlines() if x.strip()] if kw else []
    lines = tail[:1] if tail and re.search(r"[,，、]", tail[0]) else tail[:2]  # "a, b", or one a line
    keywords = [_one_line(x).strip(" -•*[]()") for line in lines for x in re.split(r"[,，、]", line)]
    return Candidate("open", stem, answer, keywords=[k for k in keywords if len(k) >= 2][:2]), None


# values a statute sets (periods, counts, amounts): a wrong option is one of these near the right one,
# as a person writing the question would pick (72시간 -> 48, 60, 90 시간, not 288)
NICE = sorted({1, 2, 3, 4, 5, 6, 7, 10, 12, 14, 15, 20, 24, 30, 36, 48, 50, 60, 72, 90, 100}
              | {m * 10 ** e for m in (1, 2, 3, 5) for e in range(2, 12)})


def numeric_distractors(answer: str, k: int, rng: random.Random) -> list[str]:
    """``k`` wrong answers made by moving the answer's number to other usual values near it (within a
    factor of 5), the way statute questions vary a period or an amount; [] when it has no whole
    number, a decimal, or too few values near it. With two numbers only "N분의 M" qualifies (M moves,
    below N); any other second number (a date, an article) would leave the options all stating it."""
    found = list(_NUMBER.finditer(answer))
    if not found or any("." in f.group() for f in found):
        return []
    cap = re.search(r"(\d+)\s*분의\s*$", answer[:found[-1].start()]) if len(found) == 2 else None
    if len(found) > 1 and not cap:
        return []
    m = found[-1]
    v = int(m.group().replace(",", ""))
    top = int(cap.group(1)) - 1 if cap else v * 5
    near = sorted((x for x in NICE if x != v and v / 5 <= x <= min(v * 5, top) and x > 0),
                  key=lambda x: (abs(math.log(x / v)), x)) if v > 0 else []
    if len(near) < k:
        return []
    pool = near[:k + 2]
    sep = "," in m.group()
    return [answer[:m.start()] + (f"{x:,}" if sep else str(x)) + answer[m.end():] for x in rng.sample(pool, k)]


def pool_distractors(answer: str, pools: list[list[str]], k: int, rng: random.Random) -> list[str]:
    """``k`` wrong answers from other questions' answers, ``pools`` in order of preference (the same
    document's, then the rest), a seeded draw inside each: of the answer's kind (with a number, the
    same words around it: "3년" takes "5년", not "제12조"), a half to twice its length, neither
    containing the other ("전기통신사업" against "전기통신사업법"). [] when too few qualify."""
    key, shape = _norm(answer), _shape(answer)
    out, seen = [], {key}
    for pool in pools:
        for p in rng.sample(pool, len(pool)):
            n = _norm(p)
            if (len(out) < k and n and n not in seen and key not in n and n not in key
                    and _shape(p) == shape and 0.5 <= len(p) / len(answer) <= 2):
                seen.add(n)
                out.append(p)
    return out if len(out) == k else []


def _shape(text: str) -> str:
    """"" for text without a number, else the text with its numbers masked ("#년")."""
    return _NUMBER.sub("#", _norm(text)) if _NUMBER.search(text) else ""


def assemble(candidate: Candidate, distractors: list[str], n_options: int, position: int) -> str | None:
    """Fill ``candidate`` with ``n_options`` options, its answer at ``position`` (1-based), the
    distractors' order kept. Why not, or None: ``too_few_distractors`` (distinct, none the answer),
    ``key_stands_out`` (the key more than twice as long as every
    wrong option: the longest option is the answer, a reader learns)."""
    norm = _norm(candidate.answer)
    wrong, seen = [], {norm}
    for d in distractors:
        if _norm(d) and _norm(d) not in seen and len(d) <= MAX_SHORT_ANSWER * 2:
            seen.add(_norm(d))
            wrong.append(d)
    if len(wrong) < n_options - 1:
        return "too_few_distractors"
    wrong = wrong[:n_options - 1]
    if len(candidate.answer) > 2 * max(len(w) for w in wrong):
        return "key_stands_out"
    candidate.options = wrong[:position - 1] + [candidate.answer] + wrong[position - 1:]
    candidate.key = position
    return None


def _norm(text: str) -> str:
    return "".join(text.split()).rstrip(".").lower()


EXAMPLE_TERMS = ("비밀번호", "잘못 입력", "차단", "분기", "5회", "1회")
def copies_example(text: str, chunk_text: str) -> bool:
    """Whether ``text`` uses a term of the worked examples that its own chunk does not have: a small
    teacher sometimes writes about the example (비밀번호 입력 횟수) instead of the document."""
    return any(t in text and t not in chunk_text for t in EXAMPLE_TERMS)
