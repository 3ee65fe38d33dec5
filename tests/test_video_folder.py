"""VideoFolder: indexing real files (good and broken), the index cache, read-time failures,
and that user files are never touched. Files are made here with PyAV (tests/media_factory.py)."""

import hashlib
import json
import math
import os
import shutil
import warnings
from fractions import Fraction

import pytest
import torch
from media_factory import make_media
from torch.utils.data import DataLoader

import avblocks.data.folder as folder_mod
from avblocks.data import MediaError, VideoFolder, read_clip
from avblocks.data.media import probe as media_probe

FPS, SR, T = 25, 16000, 8  # clips of 8 frames = 0.32 s
GOOD = {"a.mp4": 25, "sub/b.mkv": 20, "c.webm": 16, "d.MOV": 10}  # name -> frames at 25 fps
BAD = {  # name -> words the skip reason must contain
    "empty.mp4": "empty",
    "junk.mkv": "cannot read",
    "text.mp4": "cannot read",
    "silent.mp4": "no audio stream",
    "short.mp4": "too short",
    "truncated.mp4": "",
}


@pytest.fixture(scope="module")
def media_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    (root / "sub").mkdir()
    for name, frames in GOOD.items():
        target = root / name
        ext = name.rsplit(".", 1)[1].lower()
        made = make_media(
            root / f"tmp.{ext}",
            num_frames=frames,
            flash=frames // 2,
            beep_t=Fraction(frames // 2, FPS),
        )
        made.rename(target)
    (root / "empty.mp4").write_bytes(b"")
    (root / "junk.mkv").write_bytes(os.urandom(4096))
    (root / "text.mp4").write_text("this is not a video\n" * 50)
    make_media(root / "silent.mp4", num_frames=20, audio=False)
    make_media(root / "short.mp4", num_frames=5)
    whole = make_media(root / "whole.mp4", num_frames=20).read_bytes()
    (root / "whole.mp4").unlink()
    (root / "truncated.mp4").write_bytes(whole[: len(whole) // 3])
    (root / "notes.txt").write_text("not a container: ignored")
    (root / "frame.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    return root


@pytest.fixture
def root(media_root, tmp_path):
    """A private copy, for tests that change files."""
    copy = tmp_path / "data"
    shutil.copytree(media_root, copy)
    return copy


def _snapshot(root):
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _dataset(root, cache_dir, **kw):
    kw = {
        "num_frames": T,
        "fps": FPS,
        "size": (16, 16),
        "sample_rate": SR,
        "cache_dir": cache_dir,
        **kw,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return VideoFolder(root, **kw)


def _expected_clips(stride_frames):
    # independent count: clip starts 0, s, 2s, ... while start + T frames fit in the file
    return sum(math.floor((n - T) / stride_frames) + 1 for n in GOOD.values())


def test_indexes_only_good_clips_and_reports_every_skip(media_root, tmp_path):
    with pytest.warns(UserWarning) as record:
        ds = VideoFolder(
            media_root, num_frames=T, fps=FPS, size=(16, 16), sample_rate=SR, cache_dir=tmp_path
        )
    assert len(ds) == _expected_clips(T) == 8
    assert {p for p, _ in ds.clips} == {str((media_root / n).resolve()) for n in GOOD}
    assert set(ds.skipped) == {str((media_root / n).resolve()) for n in BAD}
    for name, words in BAD.items():
        assert words in ds.skipped[str((media_root / name).resolve())], (name, ds.skipped)
    messages = [str(w.message) for w in record]
    assert any(f"skipped {len(BAD)} of {len(GOOD) + len(BAD)} files" in m for m in messages)
    assert sum("skipping" in m for m in messages) == len(BAD)  # one warning per skipped file


def test_stride_sets_clip_starts(media_root, tmp_path):
    ds = _dataset(media_root, tmp_path, stride=0.16)
    assert len(ds) == _expected_clips(4)
    a = str((media_root / "a.mp4").resolve())
    assert [float(s) for p, s in ds.clips if p == a] == pytest.approx([0, 0.16, 0.32, 0.48, 0.64])


def test_iterating_the_whole_dataset_gives_aligned_items(media_root, tmp_path):
    ds = _dataset(media_root, tmp_path)
    for i in range(len(ds)):
        item = ds[i]
        assert item["video"].shape == (3, T, 16, 16) and item["audio"].shape == (1, T * SR // FPS)
        ref = read_clip(
            item["path"], start=item["start"], num_frames=T, fps=FPS, sample_rate=SR, size=(16, 16)
        )
        torch.testing.assert_close(item["video"], ref.video)
        torch.testing.assert_close(item["audio"], ref.audio)
    batch = next(iter(DataLoader(ds, batch_size=3, shuffle=False)))
    assert batch["video"].shape == (3, 3, T, 16, 16) and len(batch["path"]) == 3
    assert ds.failed == {}


def test_index_cache_is_reused_and_invalidated_by_a_changed_file(root, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = _dataset(root, cache)
    assert first.num_probed == len(GOOD) + len(BAD)
    assert first.cache_path.is_file() and first.cache_path.parent == cache

    def no_probe(path):
        raise AssertionError(f"probed {path} although the cache is valid")

    monkeypatch.setattr(folder_mod, "probe", no_probe)
    second = _dataset(root, cache)
    assert second.num_probed == 0
    assert second.clips == first.clips and second.skipped == first.skipped

    # change one file: a longer recording under the same name -> only it is probed again
    changed = root / "sub" / "b.mkv"
    make_media(tmp_path / "new.mkv", num_frames=40).replace(changed)
    probed = []

    def counting_probe(path):
        probed.append(str(path))
        return media_probe(path)

    monkeypatch.setattr(folder_mod, "probe", counting_probe)
    third = _dataset(root, cache)
    assert [os.path.basename(p) for p in probed] == ["b.mkv"]
    assert len(third) == len(first) - 2 + 40 // T


def test_user_files_are_never_modified(root, tmp_path):
    before = _snapshot(root)
    ds = _dataset(root, tmp_path / "cache")
    for i in range(len(ds)):
        ds[i]
    _dataset(root, tmp_path / "cache")  # second construction from the cache
    assert _snapshot(root) == before


def test_default_cache_lives_in_the_user_cache_not_next_to_the_data(
    media_root, tmp_path, monkeypatch
):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    before = _snapshot(media_root)
    ds = _dataset(media_root, None)
    assert ds.cache_path.parent == tmp_path / "xdg" / "avblocks" / "video_folder"
    assert json.loads(ds.cache_path.read_text())["version"] == 1
    assert _snapshot(media_root) == before


def _warnings_of(fn):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = fn()
    return result, [str(w.message) for w in record]


def test_unusable_cache_only_warns(media_root, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")  # a cache "folder" below a file cannot be created
    ds, messages = _warnings_of(lambda: _make(media_root, blocker / "sub"))
    assert any("cannot write index cache" in m for m in messages)
    assert len(ds) == 8
    good = _dataset(media_root, tmp_path / "c")
    good.cache_path.write_text("{not json")
    again, messages = _warnings_of(lambda: _make(media_root, tmp_path / "c"))
    assert any("unreadable index cache" in m for m in messages)
    assert again.clips == good.clips and again.num_probed == len(GOOD) + len(BAD)


def _make(root, cache_dir):
    return VideoFolder(
        root, num_frames=T, fps=FPS, size=(16, 16), sample_rate=SR, cache_dir=cache_dir
    )


def test_a_file_broken_after_indexing_never_stops_the_epoch(root, tmp_path):
    ds = _dataset(root, tmp_path / "cache")
    broken = str((root / "a.mp4").resolve())
    n = len(ds)
    (root / "a.mp4").write_bytes(os.urandom(3000))  # damaged after indexing
    with pytest.warns(UserWarning, match="failed at read time"):
        items = [ds[i] for i in range(n)]
    assert broken in ds.failed
    # every clip of the broken file is replaced by the next readable clip in index order
    for i, item in enumerate(items):
        j = i
        while ds.clips[j % n][0] == broken:
            j += 1
        assert (item["path"], item["start"]) == (ds.clips[j % n][0], float(ds.clips[j % n][1]))
    # deterministic: a second pass returns the same substitutes
    again = [ds[i] for i in range(n)]
    for a, b in zip(items, again):
        assert a["path"] == b["path"] and torch.equal(a["video"], b["video"])


def test_when_nothing_reads_a_blank_clip_is_returned(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    make_media(data / "only.mp4", num_frames=10)
    ds = _dataset(data, tmp_path / "cache")
    (data / "only.mp4").write_bytes(b"\x00" * 100)
    item, messages = _warnings_of(lambda: ds[0])
    assert any("failed at read time" in m for m in messages)
    assert any("black, silent" in m for m in messages)
    assert torch.all(item["video"] == -1) and torch.all(item["audio"] == 0)
    assert item["audio"].shape == (1, T * SR // FPS)


def test_constructor_rejects_bad_arguments(media_root, tmp_path):
    with pytest.raises(ValueError, match="root"):
        VideoFolder(tmp_path / "missing", num_frames=T, fps=FPS, size=None, sample_rate=SR)
    with pytest.raises(ValueError, match="stride"):
        VideoFolder(media_root, num_frames=T, fps=FPS, size=None, sample_rate=SR, stride=0)
    assert issubclass(MediaError, ValueError)


def test_a_truncated_mkv_is_indexed_by_the_packets_it_really_holds(tmp_path):
    """mkv keeps its header when cut, so only the packets show how much is left: every
    indexed clip must read, and none may lie beyond the cut."""
    data = tmp_path / "data"
    data.mkdir()
    whole = make_media(tmp_path / "whole.mkv", num_frames=100, flash=50, beep_t=2).read_bytes()
    (data / "cut.mkv").write_bytes(whole[: len(whole) // 2])
    ds = _dataset(data, tmp_path / "cache")
    assert 0 < len(ds) < 100 // T
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a read failure would warn
        for i in range(len(ds)):
            ds[i]
    assert ds.failed == {}
