"""Embedded model files: assembled from their part packages, refused unless every byte is pinned."""

from __future__ import annotations

import hashlib
import sys

import pytest

from fsku.embedded import SPLIT, STUDENT, TEACHER, SplitGGUF, WeightsError, assemble, resolve_gguf


def fake_split(tmp_path, monkeypatch, parts: list[bytes], name: str = "fsku-fake-part{i}") -> SplitGGUF:
    """Installed packages ``name.format(i)`` (a module and its dist-info on sys.path), one part each,
    pinned to these bytes."""
    site = tmp_path / "site"
    for i, data in enumerate(parts, 1):
        pkg = name.format(i=i)
        mod = site / pkg.replace("-", "_")
        (mod / "data").mkdir(parents=True)
        (mod / "__init__.py").write_text("")
        (mod / "data" / f"part{i:02d}.bin").write_bytes(data)
        info = site / f"{pkg.replace('-', '_')}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {pkg}\nVersion: 1.0\n")
    monkeypatch.syspath_prepend(str(site))
    whole = b"".join(parts)
    return SplitGGUF(name, "1.0", hashlib.sha256(whole).hexdigest(), len(whole),
                     tuple(hashlib.sha256(p).hexdigest() for p in parts))


def test_parts_assemble_once_and_a_tampered_copy_is_rebuilt(tmp_path, monkeypatch):
    split = fake_split(tmp_path, monkeypatch, [b"GGUF" + b"a" * 100, b"b" * 50, b"c" * 7])
    out = assemble("fake", split, cache=tmp_path / "cache")
    assert out.read_bytes() == b"GGUF" + b"a" * 100 + b"b" * 50 + b"c" * 7
    assert [p.name for p in out.parent.iterdir()] == ["fake.gguf"]  # no temp file left
    out.write_bytes(b"GGUF" + b"x" * 156)  # same size, other bytes: checked on every use, so rebuilt
    assert assemble("fake", split, cache=tmp_path / "cache").read_bytes()[4:8] == b"aaaa"


def test_a_corrupted_part_is_named_and_nothing_is_written(tmp_path, monkeypatch):
    split = fake_split(tmp_path, monkeypatch, [b"GGUF1111", b"2222"])
    (tmp_path / "site" / "fsku_fake_part2" / "data" / "part02.bin").write_bytes(b"2223")
    with pytest.raises(WeightsError, match=r"package fsku-fake-part2==1\.0: part02\.bin has sha256 .*reinstall"):
        assemble("fake", split, cache=tmp_path / "cache")
    assert not list((tmp_path / "cache").iterdir())


def test_a_missing_or_other_version_part_is_named(tmp_path, monkeypatch):
    split = fake_split(tmp_path, monkeypatch, [b"GGUF1111", b"2222"])
    missing = SplitGGUF(split.package, split.version, split.sha256, split.size, (*split.parts, split.parts[0]))
    with pytest.raises(WeightsError, match=r"package fsku-fake-part3==1\.0 is not installed"):
        assemble("fake", missing, cache=tmp_path / "cache")
    other = SplitGGUF(split.package, "2.0", split.sha256, split.size, split.parts)
    with pytest.raises(WeightsError, match=r"package fsku-fake-part1 is 1\.0, not the pinned 2\.0"):
        assemble("fake", other, cache=tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())


def test_resolve_names_the_param_and_the_package(tmp_path, monkeypatch):
    split = fake_split(tmp_path, monkeypatch, [b"GGUF"])
    monkeypatch.setitem(SPLIT, "fake-model", SplitGGUF(split.package, split.version, split.sha256, split.size,
                                                        (split.parts[0], split.parts[0])))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    missing = r"student\.model: fake-model: package fsku-fake-part2==1\.0 is not installed"
    with pytest.raises(WeightsError, match=missing):
        resolve_gguf("fake-model", "student.model")
    with pytest.raises(FileNotFoundError, match=r"teacher\.model: nowhere\.gguf is neither an embedded model"):
        resolve_gguf("nowhere.gguf", "teacher.model")


@pytest.mark.skipif(sys.platform != "linux", reason="the packages are installed by make setup")
def test_the_installed_packages_are_the_pinned_models():
    """The real parts, as `make setup` installed them, assemble into the pinned files."""
    from fsku.gguf import read_gguf

    for name in (TEACHER, STUDENT):
        path = resolve_gguf(name)
        assert path.stat().st_size == SPLIT[name].size
        gguf = read_gguf(path)
        assert gguf.fields["general.architecture"] == "qwen2"
        assert gguf.fields["tokenizer.ggml.tokens"] == 151936  # one vocabulary: token-level KL needs it
