import os
import signal
import subprocess
import sys
import time

import pytest

from fsku.io import atomic_dir, read_jsonl, write_json, write_jsonl

from conftest import ROOT


def test_failed_write_keeps_previous_file(tmp_path):
    path = tmp_path / "out.jsonl"
    write_jsonl(path, [{"a": 1}])

    def rows():
        yield {"a": 2}
        raise RuntimeError("killed mid-way")

    with pytest.raises(RuntimeError):
        write_jsonl(path, rows())
    assert read_jsonl(path) == [{"a": 1}]
    assert os.listdir(tmp_path) == ["out.jsonl"]


def test_atomic_dir_replaces_whole(tmp_path):
    d = tmp_path / "index"
    with atomic_dir(d) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_dir(d) as tmp:
            (tmp / "b").write_text("2")
            raise RuntimeError
    assert sorted(p.name for p in d.iterdir()) == ["a"]
    with atomic_dir(d) as tmp:
        (tmp / "c").write_text("3")
    assert sorted(p.name for p in d.iterdir()) == ["c"]
    assert sorted(os.listdir(tmp_path)) == ["index"]


def test_killed_writer_leaves_old_out(tmp_path):
    """SIGKILL in the middle of a long write: the out is still the previous, complete file."""
    path = tmp_path / "out.jsonl"
    write_json(path, {"done": True})
    code = ("import sys, time; sys.path.insert(0, sys.argv[2]); from fsku.io import write_jsonl\n"
            "def rows():\n    for i in range(10**7):\n        yield {'i': i}\n"
            "        if i == 1000: print('go', flush=True)\n"
            "write_jsonl(sys.argv[1], rows())")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path), str(ROOT)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "go"
    time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert path.read_text() == '{\n  "done": true\n}\n'
    write_json(path, {"done": 2})  # the next run sweeps the killed run's temp file
    assert os.listdir(tmp_path) == ["out.jsonl"]
