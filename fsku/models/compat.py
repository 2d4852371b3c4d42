"""Teacher/student tokenizer compatibility for token-level distillation.

Token-level KL needs both models to predict over the same vocabulary. Model families often pad
the embedding matrix past the tokenizer's size by different amounts (Qwen2.5 sizes do); that is
harmless and is fixed by resizing the student's embeddings to the teacher's row count. Different
tokenizers are not: the stage stops and says so.
"""

from __future__ import annotations


class TokenizerMismatch(ValueError):
    pass


def same_vocab(a, b) -> bool:
    return a.get_vocab() == b.get_vocab()


def check_and_align(teacher_tok, student_tok, teacher_model, student_model) -> str:
    """Raise TokenizerMismatch if the tokenizers differ; resize the student's embeddings to the
    teacher's padded size if only that differs. Returns what was done, for the log."""
    t_vocab, s_vocab = teacher_tok.get_vocab(), student_tok.get_vocab()
    if t_vocab != s_vocab:
        only_t = len(set(t_vocab.items()) - set(s_vocab.items()))
        only_s = len(set(s_vocab.items()) - set(t_vocab.items()))
        raise TokenizerMismatch(
            f"teacher and student tokenizers differ ({len(t_vocab)} vs {len(s_vocab)} tokens; {only_t} "
            f"teacher and {only_s} student entries have no match): token-level distillation needs one "
            "shared tokenizer: choose a student of the teacher's family, or train.method gold, which aligns "
            "the two by text (ULD)")
    t_rows = teacher_model.get_input_embeddings().weight.shape[0]
    s_rows = student_model.get_input_embeddings().weight.shape[0]
    if t_rows == s_rows:
        return "same tokenizer and embedding size"
    student_model.resize_token_embeddings(t_rows, mean_resizing=False)
    return f"same tokenizer; student embeddings resized from {s_rows} to {t_rows} rows (padding)"
