"""The public names import from the top level, and importing avblocks stays light."""

import subprocess
import sys

import avblocks


def test_every_public_name_resolves():
    missing = [name for name in avblocks.__all__ if not hasattr(avblocks, name)]
    assert missing == []
    for name in ("GCMAttention", "VideoLikeAudio", "MDSA", "STDiTBlock", "PlaneStack", "attend"):
        assert name in avblocks.__all__


def test_data_names():
    from avblocks.data import SyntheticSoundingVideo, VideoFolder, read_clip, write_mp4  # noqa: F401


def test_import_does_not_load_optional_heavy_modules():
    code = "import sys, avblocks; print(sorted(m for m in ('vocos', 'matplotlib', 'av') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
