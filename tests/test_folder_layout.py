"""Folders as people keep them: one subfolder per class, many clips per long file, a held-out
split by file or by time that never shares a second, and the summary a run starts with."""

import hashlib
import shutil
import warnings
from fractions import Fraction

import pytest
from media_factory import make_media

from avblocks.data import VideoFolder
from avblocks.data.folder_layout import HeldOutSplit

FPS, SR, T = 25, 16000, 10  # clips of 0.4 s


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """cats/ (two files, one in a nested folder), dogs/ (one long file), and a broken file."""
    root = tmp_path_factory.mktemp("library")
    (root / "cats" / "indoor").mkdir(parents=True)
    (root / "dogs").mkdir()
    make_media(root / "cats" / "a.mp4", num_frames=30, size=(16, 16))
    make_media(root / "cats" / "indoor" / "b.mkv", num_frames=20, size=(16, 16))
    make_media(root / "dogs" / "long.mp4", num_frames=100, size=(16, 16))
    (root / "dogs" / "broken.mp4").write_text("not a video")
    return root


def _folder(root, cache, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return VideoFolder(root, num_frames=T, fps=FPS, size=(16, 16), sample_rate=SR, cache_dir=cache, **kw)


def test_one_class_per_subfolder_with_labels_and_a_summary(library, tmp_path):
    ds = _folder(library, tmp_path, stride=0.2)  # sliding windows: a clip every 0.2 s
    assert ds.classes == ["cats", "dogs"]
    # 0.4 s clips every 0.2 s: a.mp4 1.2 s -> 5, b.mkv 0.8 s -> 3, long.mp4 4 s -> 19
    by_file = {}
    for path, _ in ds.clips:
        by_file[path.rsplit("/", 1)[1]] = by_file.get(path.rsplit("/", 1)[1], 0) + 1
    assert by_file == {"a.mp4": 5, "b.mkv": 3, "long.mp4": 19}
    labels = {ds[i]["path"].rsplit("/", 1)[1]: ds[i]["label"] for i in range(len(ds))}
    assert labels == {"a.mp4": 0, "b.mkv": 0, "long.mp4": 1}
    summary = ds.summary()
    assert "4 file(s), 27 clip(s)" in summary and "0 cats (8 clips)" in summary and "1 dogs (19 clips)" in summary
    assert "broken.mp4: cannot read" in summary


def test_a_flat_folder_is_one_class_named_after_it(library, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copy(library / "cats" / "a.mp4", flat / "a.mp4")
    shutil.copy(library / "dogs" / "long.mp4", flat / "long.mp4")
    ds = _folder(flat, tmp_path / "cache")
    assert ds.classes == ["flat"] and {ds[i]["label"] for i in range(len(ds))} == {0}


def test_split_by_file_is_a_deterministic_partition_by_path_hash(tmp_path):
    root = tmp_path / "many"
    root.mkdir()
    for i in range(8):
        make_media(root / f"clip{i}.mp4", num_frames=10, size=(16, 16))
    train = _folder(root, tmp_path, split="train", held_out=0.4, held_out_by="file")
    held = _folder(root, tmp_path, split="held_out", held_out=0.4, held_out_by="file")
    names = lambda ds: {p.rsplit("/", 1)[1] for p, _ in ds.clips}  # noqa: E731
    expected = {f"clip{i}.mp4" for i in range(8)
                if int.from_bytes(hashlib.sha1(f"clip{i}.mp4".encode()).digest()[:8], "big") / 2**64 < 0.4}
    assert names(held) == expected and names(train) == {f"clip{i}.mp4" for i in range(8)} - expected
    assert 0 < len(expected) < 8
    assert names(_folder(root, tmp_path, split="held_out", held_out=0.4)) == expected  # same again
    assert f"held_out side of a 0.4 held-out split by file ({8 - len(expected)} file(s)" in held.summary()


def test_split_by_time_keeps_the_tail_of_every_file_apart(library, tmp_path):
    kw = dict(stride=0.12, held_out=0.25, held_out_by="time")
    train, held = _folder(library, tmp_path, split="train", **kw), _folder(library, tmp_path, split="held_out", **kw)
    duration = Fraction(T, FPS)
    for name, seconds in (("a.mp4", 1.2), ("b.mkv", 0.8), ("long.mp4", 4.0)):
        cut = 0.75 * seconds  # each file's usable span starts at 0 here
        ends = [float(s + duration) for p, s in train.clips if p.endswith(name)]
        starts = [float(s) for p, s in held.clips if p.endswith(name)]
        assert all(e <= cut + 1e-6 for e in ends) and all(s >= cut - 1e-6 for s in starts), name
        if name == "long.mp4":  # 3 s of train, 1 s held out: both sides have many clips
            assert len(ends) == 22 and len(starts) == 6  # starts 0.12 k: k <= 21 and k <= 5
    assert HeldOutSplit(split="train", fraction=0.25, by="time").span(0.0, 4.0) == (0.0, 3.0)


@pytest.mark.parametrize("kw, match", [
    (dict(split="test"), "split"), (dict(split="train"), "held_out > 0"),
    (dict(held_out=1.0), "held_out"), (dict(held_out=0.2, held_out_by="frames"), "held_out_by"),
])
def test_bad_split_settings_are_refused_naming_them(library, tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        _folder(library, tmp_path, **kw)
