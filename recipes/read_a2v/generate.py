"""Long generation from a trained run's pipeline, driven by a held-out clip, streamed to mp4.

    python -m recipes.read_a2v.generate run_dir=outputs/read_a2v_tiny frames=64 out=long.mp4 [clip=0] [seed=0] [steps=10]

The run's ``pipeline/`` folder (:class:`~avblocks.pipelines.ReadPipeline`, written by
``recipes.read_a2v.train``) makes a video of ``frames`` frames from the soundtrack of held-out
synthetic clip ``clip`` (drawn ``frames`` long) and that clip's first frame as the reference,
clip by clip with one frame carried over, and streams it into ``out`` as it is made
(:meth:`ReadPipeline.stream`; the generation itself is
:func:`avblocks.diffusion.long_generation.iter_long_generation`). With your own sound and picture,
use the pipeline directly::

    ReadPipeline.from_pretrained("outputs/read_a2v_tiny/pipeline")(audio="speech.wav", reference="face.png")
"""

import json
import os
import time
from pathlib import Path

import torch

from avblocks.data import SyntheticSoundingVideo
from avblocks.pipelines.read import ReadPipeline
from recipes.common.config import load_config, parse_cli
from recipes.common.data import DataConfig
from recipes.read_a2v.config import GenerateConfig, ReadRecipe

__all__ = ["LONG_CLIP_SEED_OFFSET", "driving_clip", "generate", "load_run", "main"]

LONG_CLIP_SEED_OFFSET = 20_000
"""The long held-out clips are drawn with ``data.seed + LONG_CLIP_SEED_OFFSET`` (not the
training clips' seed, nor the same-length held-out set's)."""


def load_run(run_dir: "str | os.PathLike[str]") -> tuple[ReadRecipe, ReadPipeline]:
    """The training config of a finished run (where its clips come from) and its pipeline."""
    run_dir = Path(run_dir)
    return load_config(ReadRecipe, run_dir / "config.yaml"), ReadPipeline.from_pretrained(run_dir / "pipeline")


def driving_clip(data: DataConfig, frames: int, index: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Held-out synthetic clip ``index`` of ``frames`` frames: ``(video 3 L h w, waveform n)``."""
    clips = SyntheticSoundingVideo.from_spec(data.spec().with_frames(frames), num_clips=index + 1,
                                             num_classes=data.num_classes, seed=data.seed + LONG_CLIP_SEED_OFFSET)
    item = clips[index]
    return item["video"], item["audio"]


def generate(cfg: GenerateConfig) -> dict:
    run, pipe = load_run(cfg.run_dir)
    video, waveform = driving_clip(run.data, cfg.frames, cfg.clip)
    began = time.perf_counter()
    pipe.stream(waveform, video[:, 0], cfg.out, frames=cfg.frames, steps=cfg.steps, guidance=cfg.guidance,
                seed=cfg.seed)
    seconds = time.perf_counter() - began
    return {"out": cfg.out, "frames": cfg.frames, "seconds": round(seconds, 2),
            "frames_per_second": round(cfg.frames / seconds, 2)}


def main(argv=None) -> dict:
    summary = generate(parse_cli(GenerateConfig, argv, description=__doc__.splitlines()[0]))
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
