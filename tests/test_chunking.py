import json
import re

import pymupdf
import pytest

from fsku.chunking.config import ChunkConfig
from fsku.chunking.extract import ExtractError, extract_pdf
from fsku.chunking.pipeline import chunk_corpus

from conftest import ROOT, render_source, run

STATUTE = """# 제1장 총칙
제1조(목적) 이 규정은 전자금융거래의 안전성과 신뢰성을 확보함을 목적으로 한다.
제2조(정의) 이 규정에서 사용하는 용어의 뜻은 다음과 같다.
1. "접근매체"란 거래지시에 사용되는 수단 또는 정보를 말한다.
2. "이용자"란 전자금융거래를 이용하는 자를 말한다.
# 제2장 책임
제3조(책임) ① 금융회사는 접근매체의 위조나 변조로 발생한 사고로 이용자에게 손해가 생기면 그 손해를 배상할 책임을 진다.
② 이용자의 고의나 중대한 과실이 있으면 책임의 일부를 이용자가 부담하게 할 수 있다.
③ 금융회사는 제1항의 책임을 이행하기 위하여 보험에 가입하여야 한다.
④ 보험의 최저 보상한도는 20억 원으로 한다.
[[pagebreak]]
제4조(통지) 금융회사는 사고를 안 때에는 지체 없이 이용자에게 알려야 한다."""

GUIDE = """# 1. 개요
이 가이드는 인증수단의 운영 기준을 정한다.
| 인증수단 | 보안등급 | 1일 이체한도 |
| OTP | 1등급 | 5억 원 |
| 보안카드 | 3등급 | 1,000만 원 |
[[columns]]
## 사례
왼쪽단첫문장 이용자 갑은 문자메시지로 받은 링크를 눌러 악성 앱을 설치하였다. 그 뒤 접근매체 정보가 유출되어 300만 원이 이체되었다. 금융회사는 이상금융거래탐지시스템으로 추가 이체를 차단하였다. 이어서 금융회사는 이용자에게 연락하여 본인 여부를 확인하였고 지급정지를 요청하였다. 피해 금액은 사기이용계좌의 잔액 범위에서 환급 절차를 밟았다.
오른쪽단문장 금융회사는 이 사례를 바탕으로 탐지 규칙을 보완하고 원격제어 앱 실행 여부를 새로운 위험 신호로 추가하였다. 또한 고액 이체 전에 추가 인증을 요구하도록 기준을 바꾸었다.
[[/columns]]
## 맺음
마지막 문단이다."""


def test_extract_statute_drops_headers_and_page_numbers(tmp_path):
    pdf = render_source(tmp_path, "statute", STATUTE, kind="statute", header="반복 머리글 문구")
    elements, pages = extract_pdf(pdf)
    assert pages == 2
    texts = [e.text for e in elements]
    assert not any("반복 머리글" in t for t in texts)
    assert not any(re.fullmatch(r"-?\s*\d+\s*-?", t) for t in texts)
    assert elements[0].kind == "heading" and elements[0].text == "시험 문서"
    assert any(t.startswith("제3조(책임) ① 금융회사는") and t.endswith("책임을 진다.") for t in texts)


def test_extract_table_rows_and_two_columns(tmp_path):
    pdf = render_source(tmp_path, "guide", GUIDE)
    elements, _ = extract_pdf(pdf)
    tables = [e.text for e in elements if e.kind == "table"]
    assert tables == ["인증수단 | 보안등급 | 1일 이체한도", "OTP | 1등급 | 5억 원", "보안카드 | 3등급 | 1,000만 원"]
    full = "\n".join(e.text for e in elements)
    # the two-column page: the whole left column comes before the right column
    assert full.index("왼쪽단첫문장") < full.index("환급 절차를 밟았다.") < full.index("오른쪽단문장")
    assert "환급 절차를 밟았다." in full and "이상금융거래탐지시스템으로 추가 이체를 차단하였다." in full
    doc = pymupdf.open(pdf)
    words = doc[1].get_text("words")
    xs = [w[0] for w in words if w[4] in ("왼쪽단첫문장", "오른쪽단문장")]
    assert len(xs) == 2 and xs[1] > doc[1].rect.width / 2 > xs[0]  # it really is two columns


def test_statute_chunks_follow_articles(tmp_path):
    render_source(tmp_path, "statute", STATUTE, kind="statute")
    rows, metrics = chunk_corpus(tmp_path / "pdf", ChunkConfig(size=500, overlap=50))
    sections = [r["section"] for r in rows]
    assert sections == ["제1장 총칙 > 제1조(목적)", "제1장 총칙 > 제2조(정의)", "제2장 책임 > 제3조(책임)",
                        "제2장 책임 > 제4조(통지)"]
    assert rows[1]["text"].startswith("제2조(정의)") and "2. \"이용자\"란" in rows[1]["text"]
    assert rows[3]["page"] == 2 and rows[0]["page"] == 1
    assert metrics["documents"] == 1 and metrics["pages"] == 2 and metrics["chunks"] == 4


def test_long_article_repeats_its_title(tmp_path):
    render_source(tmp_path, "statute", STATUTE, kind="statute")
    rows, _ = chunk_corpus(tmp_path / "pdf", ChunkConfig(size=80, overlap=10))
    art3 = [r for r in rows if r["section"].endswith("제3조(책임)")]
    assert len(art3) >= 3
    assert all(r["text"].startswith("제3조(책임)") for r in art3)
    assert all(len(r["text"]) <= 80 for r in rows)


def test_chunk_ids_stable_and_unique(corpus_chunks):
    rows, metrics = corpus_chunks
    ids = [r["chunk_id"] for r in rows]
    assert len(set(ids)) == len(ids)
    again, _ = chunk_corpus(ROOT / "data/raw/corpus", ChunkConfig())
    assert [r["chunk_id"] for r in again] == ids
    assert metrics["documents"] == 16 and metrics["files_skipped"] == 0
    for r in rows:
        assert set(r) >= {"chunk_id", "source", "page", "section", "text", "n_chars"}
        assert r["n_chars"] == len(r["text"]) <= 500


def test_token_unit(tmp_path, corpus_chunks):
    """chunk.unit = tokens measures lengths with a real tokenizer (a tokenizer.json file)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator([r["text"] for r in corpus_chunks[0]],
                            trainers.WordPieceTrainer(vocab_size=2000, special_tokens=["[UNK]"]))
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    render_source(tmp_path, "statute", STATUTE, kind="statute")
    rows, metrics = chunk_corpus(tmp_path / "pdf", ChunkConfig(size=40, overlap=5, unit="tokens",
                                                              tokenizer=str(path)))
    assert len(rows) > 4 and all(0 < r["n_tokens"] <= 40 for r in rows)
    assert all(r["n_tokens"] == len(tok.encode(r["text"], add_special_tokens=False).ids) for r in rows)
    assert "p95_tokens" in metrics


def _bad_pdfs(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.pdf").write_bytes(b"")
    (folder / "notpdf.pdf").write_text("이것은 PDF가 아니다", encoding="utf-8")
    (folder / "corrupt.pdf").write_bytes(b"%PDF-1.7\n" + bytes(range(256)) * 20)
    doc = pymupdf.open()
    doc.new_page().draw_rect(pymupdf.Rect(50, 50, 200, 200), fill=(0, 0, 0))
    doc.save(folder / "scanned.pdf")
    doc = pymupdf.open()
    doc.new_page().insert_text((50, 50), "secret", fontname="helv")
    doc.save(folder / "encrypted.pdf", encryption=pymupdf.PDF_ENCRYPT_AES_256, owner_pw="o", user_pw="u")


def test_bad_pdfs_are_skipped_with_reasons(tmp_path):
    render_source(tmp_path, "good", STATUTE, kind="statute")
    _bad_pdfs(tmp_path / "pdf")
    rows, metrics = chunk_corpus(tmp_path / "pdf", ChunkConfig())
    reasons = {s["file"]: s["reason"] for s in metrics["skipped"]}
    assert set(reasons) == {"empty.pdf", "notpdf.pdf", "corrupt.pdf", "scanned.pdf", "encrypted.pdf"}
    assert reasons["empty.pdf"] == "empty file"
    assert reasons["notpdf.pdf"].startswith("not a PDF")
    assert reasons["corrupt.pdf"].startswith("corrupt PDF")
    assert reasons["scanned.pdf"].startswith("no text layer")
    assert reasons["encrypted.pdf"].startswith("encrypted PDF")
    assert metrics["documents"] == 1 and {r["source"] for r in rows} == {"good.pdf"}


def test_no_readable_document_is_an_error(tmp_path):
    _bad_pdfs(tmp_path / "pdf")
    with pytest.raises(ValueError, match=r"no document .* yielded text .*encrypted\.pdf: encrypted PDF"):
        chunk_corpus(tmp_path / "pdf", ChunkConfig())
    with pytest.raises(ExtractError, match="empty file"):
        extract_pdf(tmp_path / "pdf" / "empty.pdf")


def test_stage_cli_errors_keep_previous_outs(tmp_path):
    """A failing run names the problem and leaves the outs of the last good run untouched."""
    render_source(tmp_path, "good", STATUTE, kind="statute")
    params = tmp_path / "params.yaml"
    params.write_text("chunk:\n  size: 300\n  overlap: 30\n", encoding="utf-8")
    out, met = tmp_path / "chunks.jsonl", tmp_path / "chunk.json"
    args = ["python", "-m", "stages.chunk", "--params", str(params), "--corpus", str(tmp_path / "pdf"),
            "--out", str(out), "--metrics", str(met)]
    run(args, cwd=ROOT)
    first = out.read_bytes()
    assert json.loads(met.read_text())["chunks"] == len(first.splitlines())

    params.write_text("chunk:\n  size: 300\n  overlapp: 30\n", encoding="utf-8")
    proc = run(args, cwd=ROOT, check=False)
    assert proc.returncode == 1 and "unknown key chunk.overlapp" in proc.stderr

    empty = tmp_path / "nothing"
    _bad_pdfs(empty)
    params.write_text("chunk:\n  size: 300\n", encoding="utf-8")
    args[args.index("--corpus") + 1] = str(empty)
    proc = run(args, cwd=ROOT, check=False)
    assert proc.returncode == 1 and "yielded text" in proc.stderr and "notpdf.pdf" in proc.stderr
    assert "skipping empty.pdf: empty file" in proc.stderr
    assert out.read_bytes() == first
    assert not list(tmp_path.glob(".chunks.jsonl.*"))
