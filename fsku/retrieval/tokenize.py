"""Korean morpheme tokenization for BM25 with kiwipiepy.

BM25 over whitespace tokens fails in Korean: particles and endings glue onto nouns (접근매체의,
접근매체를), so the same word rarely matches. Kiwi splits them off; only content morphemes (by POS
tag) become index terms. Verb and adjective stems are kept as their lemma.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


class MorphTokenizer:
    def __init__(self, pos_tags: Sequence[str], num_workers: int = -1):
        from kiwipiepy import Kiwi

        self.kiwi = Kiwi(num_workers=num_workers)
        self.pos_tags = tuple(pos_tags)

    def _terms(self, tokens) -> list[str]:
        out = []
        for t in tokens:
            tag = t.tag.split("-", 1)[0]
            if tag in self.pos_tags:
                out.append(t.form.lower() if tag == "SL" else t.form)
        return out

    def __call__(self, text: str) -> list[str]:
        return self._terms(self.kiwi.tokenize(text))

    def batch(self, texts: Iterable[str]) -> list[list[str]]:
        return [self._terms(tokens) for tokens in self.kiwi.tokenize(list(texts))]
