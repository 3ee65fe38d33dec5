"""The one atomic writer: temp file in the same folder, fsync, rename; nothing left on error."""

import json
import math

import pytest

from avblocks.atomic import atomic_path, atomic_write, atomic_write_json, atomic_write_text


def _files(d):
    return sorted(p.name for p in d.iterdir())


def test_atomic_write_success_and_crash(tmp_path):
    target = tmp_path / "clip.mp4"
    seen = []

    def writer(p):
        seen.append(p)
        p.write_bytes(b"new")

    atomic_write(target, writer)
    assert target.read_bytes() == b"new"
    assert seen[0].suffix == ".mp4" and seen[0].parent == tmp_path  # same folder and suffix

    with pytest.raises(RuntimeError, match="encoder died"), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("encoder died")
    assert target.read_bytes() == b"new"
    assert _files(tmp_path) == ["clip.mp4"]


def test_atomic_write_text_and_json(tmp_path):
    atomic_write_text(tmp_path / "notes.txt", "héllo\n")
    assert (tmp_path / "notes.txt").read_text(encoding="utf-8") == "héllo\n"
    atomic_write_json(tmp_path / "m.json", {"loss": 0.5, "steps": [1, 2]})
    assert json.loads((tmp_path / "m.json").read_text()) == {"loss": 0.5, "steps": [1, 2]}
    assert _files(tmp_path) == ["m.json", "notes.txt"]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_atomic_write_json_refuses_nan_and_keeps_old_file(tmp_path, bad):
    target = tmp_path / "metrics.json"
    atomic_write_json(target, {"fvd": 1.0})
    with pytest.raises(ValueError, match="metrics.json"):
        atomic_write_json(target, {"fvd": bad})
    assert json.loads(target.read_text()) == {"fvd": 1.0}
    assert _files(tmp_path) == ["metrics.json"]
