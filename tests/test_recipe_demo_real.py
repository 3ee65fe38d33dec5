"""`make demo-real` on a stand-in film: the fetch through pip (idempotent, a clear message when
pip cannot), the proxy, both trainings, held-out reconstructions and generated clips as mp4 +
PNG, metrics.json. The real run fetches Big Buck Bunny; here pip is replaced by a command that
writes a source distribution holding a small film the test makes, so nothing is downloaded."""

import io
import json
import sys
import tarfile
import zipfile
from hashlib import sha256
from pathlib import Path

import pytest
from media_factory import make_media

from avblocks.audio import HiFiGAN
from avblocks.data import probe
from recipes.common import real_media
from recipes.proav_dit import demo_real
from recipes.proav_dit.config import DemoRealConfig


def _fake_sdist(film: Path, folder: Path) -> Path:
    """moviepy-2.2.1.tar.gz holding the docs zip that holds ``film`` as resources/bbb.mp4."""
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as z:
        z.writestr("moviepy_10_minutes/resources/bbb.mp4", film.read_bytes())
    path = folder / "moviepy-2.2.1.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("moviepy-2.2.1/docs/_static/medias/getting_started/moviepy_10_minutes/"
                               "moviepy_10_minutes.zip")
        info.size = len(inner.getvalue())
        tar.addfile(info, io.BytesIO(inner.getvalue()))
    return path


def _copying_pip(sdist: Path) -> tuple[str, ...]:
    """A 'pip download' that copies ``sdist`` into the folder after -d."""
    code = "import shutil, sys; shutil.copy(sys.argv[1], sys.argv[sys.argv.index('-d') + 1])"
    return (sys.executable, "-c", code, str(sdist))


@pytest.fixture
def film(tmp_path, monkeypatch):
    """A 22 s stand-in film (24 fps, 44.1 kHz stereo with a beep every second) and its sdist."""
    path = make_media(tmp_path / "film.mp4", fps=24, sample_rate=44100, num_frames=528, size=(36, 64),
                      levels=[(k * 7) % 256 for k in range(528)], tone=True, channels=2)
    monkeypatch.setattr(real_media, "FILM_SHA256", sha256(path.read_bytes()).hexdigest())
    return path, _fake_sdist(path, tmp_path)


def test_fetch_film_is_idempotent_and_says_what_failed(tmp_path, film):
    path, sdist = film
    cache = tmp_path / "cache"
    got = real_media.fetch_film(cache, pip=_copying_pip(sdist))
    assert got == cache / "bbb.mp4" and got.read_bytes() == path.read_bytes()
    failing = (sys.executable, "-c", "import sys; print('no network', file=sys.stderr); sys.exit(1)")
    assert real_media.fetch_film(cache, pip=failing) == got  # already there: pip is not asked
    with pytest.raises(real_media.MissingAsset, match="could not fetch moviepy==2.2.1 through pip.*no network"):
        real_media.fetch_film(tmp_path / "elsewhere", pip=failing)
    assert not (tmp_path / "elsewhere" / "bbb.mp4").exists()
    got.write_bytes(b"damaged")  # a damaged copy is fetched again
    assert real_media.fetch_film(cache, pip=_copying_pip(sdist)).read_bytes() == path.read_bytes()


def test_demo_real_end_to_end_on_a_stand_in_film(tmp_path, film, monkeypatch, config_json):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # the folder index cache
    _, sdist = film
    cache = tmp_path / "cache"
    real_media.fetch_film(cache, pip=_copying_pip(sdist))
    tiny = HiFiGAN(config=config_json | {"upsample_rates": [8, 8, 4], "upsample_kernel_sizes": [16, 16, 8],
                                         "upsample_initial_channel": 16, "resblock_kernel_sizes": [3],
                                         "resblock_dilation_sizes": [[1]]})
    tiny.save_pretrained(tmp_path / "hifigan")
    out = tmp_path / "demo"
    metrics = demo_real.run(DemoRealConfig(
        output_dir=str(out), cache_dir=str(cache), story_seconds=20.0, vocoder=str(tmp_path / "hifigan"),
        autoencoder_overrides=["optim.steps=2", "optim.warmup=1", "optim.batch_size=2", "run.eval_clips=2", "model.hidden_channels=16",
                               "model.depth=1", "model.heads=2", "model.groups=2", "data.stride=1.0"],
        dit_overrides=["optim.steps=2", "optim.warmup=1", "optim.batch_size=2", "model.hidden_size=32", "model.depth=1",
                       "model.num_heads=2"],
        samples=2, sample_steps=1, progress=False))
    proxy = cache / "story_36x64_20s" / "bbb.mp4"
    info = probe(proxy)
    assert (info.width, info.height, info.fps, info.sample_rate, info.audio_channels) == (64, 36, 24.0, 22050, 1)
    assert abs(info.video_end - 20.0) < 0.05
    rec = metrics["held_out_reconstruction"]
    assert rec["clips"] == 1 and {"psnr", "ssim", "lsd", "onsets_kept"} <= set(rec)  # 2 s held out: 1 clip
    for folder, prefix in (("autoencoder/eval", "clip00"), ("samples", "joint00"), ("samples_audio_to_video", "a2v00")):
        assert any((out / folder).glob(f"{prefix}*.mp4")) and any((out / folder).glob(f"{prefix}*.png")), folder
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["licenses"][0].startswith("Big Buck Bunny") and saved["pipeline"] == str(out / "pipeline")
    assert json.loads((out / "pipeline" / "pipeline.json").read_text())["components"]["hifigan"] == "HiFiGAN"


@pytest.fixture
def config_json():
    return {"resblock": "1", "upsample_rates": [8, 8, 2, 2], "upsample_kernel_sizes": [16, 16, 4, 4],
            "upsample_initial_channel": 512, "resblock_kernel_sizes": [3, 7, 11],
            "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]], "num_mels": 80, "n_fft": 1024,
            "hop_size": 256, "win_size": 1024, "sampling_rate": 22050, "fmin": 0, "fmax": 8000}
