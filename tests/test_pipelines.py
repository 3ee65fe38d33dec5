"""The three pipelines on tiny random components: every mode's shapes from the spec, mp4 files
read back, the given modality kept, folders that round-trip bit-exactly and refuse damage,
and users' media (a wav at another rate, a png, a video without sound) fitted or refused with
a message naming the file."""

import json
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from avblocks.audio import MelConfig
from avblocks.audio.frame_codes import FrameAudioCodec
from avblocks.codecs import FrameCodeCodec, ImageLatentCodec, TriPlaneCodec
from avblocks.data import MediaError, read_clip
from avblocks.data.mp4 import Mp4Writer
from avblocks.dit.av_dit import AVDiT
from avblocks.dit.dit import DiTConfig
from avblocks.dit.packed_stdit import PackedSTDiT
from avblocks.dit.read_denoiser import ReadDenoiser
from avblocks.dit.stdit import STDiT
from avblocks.latent.image_autoencoder import ImageAutoencoder
from avblocks.latent.mdsa import MDSA
from avblocks.pipelines import (
    AVDiTPipeline,
    Pipeline,
    ProAVDiTPipeline,
    ReadPipeline,
    ReadSampling,
    SoundingVideo,
)
from avblocks.saveload import CheckpointError
from avblocks.spec import AVSpec
from tests.media_factory import make_media
from tests.test_single_stream import write_png, write_wav

SPEC = AVSpec(fps=8, sample_rate=16000, num_frames=8, size=(16, 16),
              mel=MelConfig(sample_rate=16000, n_fft=800, hop=200, n_mels=16))


def _randomise(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Non-zero weights everywhere (zero-initialised branches would make outputs trivial)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return module


def proav_pipeline(layout: str = "canvas") -> ProAVDiTPipeline:
    mdsa = _randomise(MDSA(video_patch=(1, 4, 4), audio_patch=(1, 4, 2), hidden_channels=16, latent_channels=4,
                           depth=1, heads=2, groups=2), 0)
    codec = TriPlaneCodec(SPEC, mdsa, patch=(1, 8), layout=layout)
    width = dict(in_channels=4, patch=(1, 8), hidden_size=32, depth=1, num_heads=2, num_classes=4)
    if layout == "packed":
        denoiser = PackedSTDiT(planes=codec.plane_shapes, **width)
    else:
        denoiser = STDiT(side=codec.side, frames=6, **width)
    return ProAVDiTPipeline(codec, _randomise(denoiser, 1))


def proav_packed_pipeline() -> ProAVDiTPipeline:
    return proav_pipeline("packed")


def av_dit_pipeline() -> AVDiTPipeline:
    ae = _randomise(ImageAutoencoder(in_channels=3, latent_channels=4, hidden_channels=8, downsample=4, depth=1,
                                     groups=2), 2)
    codec = ImageLatentCodec(SPEC, ae, audio_images=2)
    dit = DiTConfig(input_size=4, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=2,
                    num_classes=8, learn_sigma=False)
    model = _randomise(AVDiT(dit=dit, video_frames=8, audio_images=2, lora_rank=2, fusion_every=1,
                             num_clip_classes=4, audio_label_offset=4), 3)
    return AVDiTPipeline(codec, model)


def read_pipeline() -> ReadPipeline:
    audio_codec = _randomise(FrameAudioCodec(mel_bins=16, columns_per_frame=10, strides=(2, 5), hidden_channels=16,
                                             code_dim=8), 4)
    denoiser = _randomise(ReadDenoiser(size=16, frames=5, patch=4, hidden_size=32, depth=1, num_heads=2,
                                       audio_dim=8), 5)
    return ReadPipeline(FrameCodeCodec(SPEC, audio_codec), denoiser, sampling=ReadSampling(steps=2))


@pytest.fixture(scope="module")
def proav() -> ProAVDiTPipeline:
    return proav_pipeline()


@pytest.fixture(scope="module")
def proav_packed() -> ProAVDiTPipeline:
    return proav_pipeline("packed")


def check_file(path, num_frames: int, spec: AVSpec = SPEC) -> None:
    """An mp4 that reads back at the spec's rate with every frame and all of the audio."""
    with av.open(str(path)) as c:
        assert c.streams.video[0].average_rate == spec.fps
        assert c.streams.audio[0].codec_context.sample_rate == spec.sample_rate
    clip = read_clip(path, num_frames=num_frames, fps=spec.fps, sample_rate=spec.sample_rate)
    assert clip.video.shape == (3, num_frames, *spec.size)
    assert clip.audio.shape == (1, num_frames * spec.samples_per_frame)
    with pytest.raises(MediaError, match="too short"):  # and not one frame more
        read_clip(path, num_frames=num_frames + 1, fps=spec.fps, sample_rate=spec.sample_rate, audio_slack=0.0)


# ---- ProAV-DiT ----------------------------------------------------------------------------


def test_joint_clips_have_the_spec_shape_and_play_back(tmp_path, proav):
    clips = proav(labels=[0, 3], steps=2, progress=False)
    assert isinstance(clips, SoundingVideo) and len(clips) == 2
    assert clips.video.shape == (2, 3, 8, 16, 16) and clips.audio.shape == (2, SPEC.num_samples)
    assert clips.labels.tolist() == [0, 3]
    paths = clips.save(tmp_path / "clip.mp4")
    assert [p.name for p in paths] == ["clip_00.mp4", "clip_01.mp4"]
    check_file(paths[1], 8)
    assert clips[1].save(tmp_path / "one.mp4").name == "one.mp4"
    assert clips.preview(tmp_path / "sheet.png").stat().st_size > 5000
    assert clips[1]._title(0) == "clip 1 (class 3)" and clips[-1][0]._title(0) == "clip 1 (class 3)"
    # the same call gives the same clips; another seed others
    again = proav(labels=[0, 3], steps=2, progress=False)
    assert torch.equal(again.video, clips.video)
    assert not torch.equal(proav(labels=[0, 3], steps=2, seed=1, progress=False).video, clips.video)


def test_unconditional_and_bad_labels(proav):
    assert len(proav(num_clips=3, steps=1, progress=False)) == 3
    with pytest.raises(ValueError, match=r"labels \[7\] out of range"):
        proav(labels=[7], steps=1, progress=False)
    with pytest.raises(ValueError, match="not both"):
        proav(audio=torch.zeros(1, SPEC.num_samples), video=torch.zeros(1, 3, 8, 16, 16))


def test_audio_to_video_from_a_wav_at_another_rate(tmp_path, proav):
    sr = 22050
    t = np.arange(2 * sr) / sr
    tone = (0.3 * np.sin(2 * np.pi * 330 * t) * (t % 0.25 < 0.05)).astype(np.float32)  # clicks of a tone
    path = write_wav(tmp_path / "speech.wav", np.stack([tone, 0.5 * tone]), sr)
    clips = proav(audio=path, steps=2, progress=False)
    assert clips.video.shape == (1, 3, 8, 16, 16) and clips.audio.shape == (1, SPEC.num_samples)
    assert clips.labels is None
    # the sound written is the given sound (the first second, resampled and mixed to mono)
    assert float(clips.audio.abs().max()) == pytest.approx(0.3 * 0.75, rel=0.05)
    check_file(clips.save(tmp_path / "a2v.mp4"), 8)


@pytest.mark.parametrize("layout", ["canvas", "packed"])
def test_audio_to_video_keeps_the_audio_planes_and_video_to_audio_the_video_planes(request, layout):
    pipe = request.getfixturevalue("proav" if layout == "canvas" else "proav_packed")
    wave = torch.randn(2, SPEC.num_samples) * 0.2
    video = torch.rand(2, 3, 8, 16, 16) * 2 - 1
    condition = pipe.codec.encode(video, wave)
    for held, index in ((slice(3, 6), 1), (slice(0, 3), 0)):
        clean = torch.zeros(2, 6, dtype=torch.bool)
        clean[:, held] = True
        out = pipe.sample_latents(torch.tensor([0, 1]), condition=condition, clean=clean, steps=2,
                                  sampler="euler", cfg_scale=1.0, seed=0, progress=False)
        kept = [torch.equal(a, b) for a, b in zip(pipe.codec.layout.split(out),
                                                  pipe.codec.layout.split(condition), strict=True)]
        assert kept == [i in range(6)[held] for i in range(6)]
        assert torch.equal(pipe.codec.decode_frames(out)[index], pipe.codec.decode_frames(condition)[index])


def test_video_to_audio_from_a_video_without_sound(tmp_path, proav):
    path = make_media(tmp_path / "silent.mp4", fps=Fraction(8), num_frames=10, size=(24, 32), audio=False)
    clips = proav(video=path, steps=2, progress=False)
    assert clips.video.shape == (1, 3, 8, 16, 16) and clips.audio.shape == (1, SPEC.num_samples)
    assert float(clips.video.max()) < -0.9  # the given (black) frames, cropped to 16 x 16


@pytest.mark.parametrize(("make", "match"), [
    (lambda d: (d / "notes.wav").write_text("not media at all " * 30) and d / "notes.wav", "cannot read"),
    (lambda d: write_wav(d / "silent.wav", np.zeros((1, 32000), np.float32), 16000), "silent"),
    (lambda d: write_wav(d / "short.wav", np.full((1, 4000), 0.3, np.float32), 16000), "too short"),
    (lambda d: make_media(d / "mute.mp4", fps=Fraction(8), num_frames=10, audio=False), "no audio stream"),
])
def test_unusable_audio_is_refused_naming_the_file(tmp_path, proav, make, match):
    path = make(tmp_path)
    with pytest.raises(MediaError, match=match) as info:
        proav(audio=path, steps=1, progress=False)
    assert str(path) in str(info.value)


def test_folder_round_trips_bit_exactly_and_loads_as_its_class(tmp_path, proav):
    folder = proav.save_pretrained(tmp_path / "pipe")
    loaded = Pipeline.from_pretrained(folder)
    assert type(loaded) is ProAVDiTPipeline and loaded.spec == proav.spec
    for name, module in proav.modules().items():
        theirs = loaded.modules()[name].state_dict()
        assert all(torch.equal(v, theirs[k]) for k, v in module.state_dict().items())
    assert torch.equal(loaded(labels=[1], steps=2, progress=False).video,
                       proav(labels=[1], steps=2, progress=False).video)
    with pytest.raises(CheckpointError, match="holds a ProAVDiTPipeline, not a ReadPipeline"):
        ReadPipeline.from_pretrained(folder)
    # saving again replaces the folder whole, leaving nothing else next to it
    proav.save_pretrained(folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]


def test_a_packed_folder_round_trips_and_records_its_layout(tmp_path, proav_packed):
    folder = proav_packed.save_pretrained(tmp_path / "pipe")
    manifest = json.loads((folder / "pipeline.json").read_text())
    assert manifest["settings"]["layout"] == "packed" and manifest["components"]["denoiser"] == "PackedSTDiT"
    loaded = Pipeline.from_pretrained(folder)
    assert isinstance(loaded.denoiser, PackedSTDiT) and loaded.codec.latent_shape(1) == (1, 4, 16 + 32 + 32 + 20 + 32 + 40)
    assert torch.equal(loaded(labels=[1], steps=2, progress=False).video,
                       proav_packed(labels=[1], steps=2, progress=False).video)


def test_a_canvas_folder_saved_before_layouts_existed_still_loads(tmp_path, proav):
    folder = proav.save_pretrained(tmp_path / "pipe")
    manifest = json.loads((folder / "pipeline.json").read_text())
    del manifest["settings"]["layout"]  # what folders written before the packed layout hold
    (folder / "pipeline.json").write_text(json.dumps(manifest))
    loaded = Pipeline.from_pretrained(folder)
    assert loaded.codec.layout_name == "canvas" and isinstance(loaded.denoiser, STDiT)
    assert torch.equal(loaded(labels=[1], steps=2, progress=False).video,
                       proav(labels=[1], steps=2, progress=False).video)


def test_a_layout_and_denoiser_that_disagree_are_refused(proav, proav_packed):
    with pytest.raises(ValueError, match="packed codec needs a PackedSTDiT"):
        ProAVDiTPipeline(proav_packed.codec, proav.denoiser)
    with pytest.raises(ValueError, match="canvas codec needs an STDiT"):
        ProAVDiTPipeline(proav.codec, proav_packed.denoiser)


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "outside", "no_manifest"])
def test_a_damaged_folder_is_refused_naming_the_file(tmp_path, proav, damage):
    folder = proav.save_pretrained(tmp_path / "pipe")
    weights = folder / "denoiser" / "model.safetensors"
    manifest = json.loads((folder / "pipeline.json").read_text())
    if damage == "flip":
        data = bytearray(weights.read_bytes())
        data[-10] ^= 0xFF
        weights.write_bytes(bytes(data))
    elif damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "delete":
        weights.unlink()
    elif damage == "outside":  # a manifest that would read a file outside the folder
        (tmp_path / "secret.json").write_text("{}")
        manifest["files"]["../secret.json"] = "0" * 64
        (folder / "pipeline.json").write_text(json.dumps(manifest))
    else:
        (folder / "pipeline.json").unlink()
    named = {"flip": weights, "truncate": weights, "delete": weights, "outside": "../secret.json",
             "no_manifest": folder / "pipeline.json"}[damage]
    with pytest.raises(CheckpointError) as info:
        Pipeline.from_pretrained(folder)
    assert str(named) in str(info.value)


# ---- AV-DiT -------------------------------------------------------------------------------


def test_av_dit_pipeline_samples_and_round_trips(tmp_path):
    pipe = av_dit_pipeline()
    clips = pipe(labels=[0, 1], steps=2, progress=False)
    assert clips.video.shape == (2, 3, 8, 16, 16) and clips.audio.shape == (2, SPEC.num_samples)
    check_file(clips[0].save(tmp_path / "av.mp4"), 8)
    loaded = Pipeline.from_pretrained(pipe.save_pretrained(tmp_path / "pipe"))
    assert type(loaded) is AVDiTPipeline
    assert torch.equal(loaded(labels=[0, 1], steps=2, progress=False).video, clips.video)
    with pytest.raises(TypeError):
        pipe(audio="x.wav")  # AV-DiT generates jointly only


# ---- READ ---------------------------------------------------------------------------------


def test_read_from_a_reference_picture_and_a_wav_at_another_rate(tmp_path, monkeypatch):
    pipe = read_pipeline()
    sr = 22050
    wave = (0.2 * np.sin(2 * np.pi * 220 * np.arange(int(2.6 * sr)) / sr)).astype(np.float32)
    audio = write_wav(tmp_path / "voice.wav", np.stack([wave, wave]), sr)
    rgb = np.zeros((40, 30, 3), np.uint8)
    rgb[..., 1] = 200
    reference = write_png(tmp_path / "face.png", rgb)
    clips = pipe(audio, reference)
    frames = int(2.6 * 16000) // SPEC.samples_per_frame  # every whole frame of the sound: 20
    assert clips.video.shape == (1, 3, frames, 16, 16) and clips.audio.shape == (1, frames * 2000)
    assert clips.spec.num_frames == frames
    path = clips.save(tmp_path / "talk.mp4")
    check_file(path, frames, clips.spec)
    # streaming hands the writer the frames of the whole call, clip by clip
    written = []
    write = Mp4Writer.write
    monkeypatch.setattr(Mp4Writer, "write", lambda self, new: (written.append(new), write(self, new)))
    streamed = pipe.stream(audio, reference, tmp_path / "stream.mp4")
    assert len(written) > 1 and torch.equal(torch.cat(written, dim=1).clamp(-1, 1), clips.video[0])
    check_file(streamed, frames, clips.spec)
    assert pipe(audio, reference, frames=6).video.shape[2] == 6
    loaded = Pipeline.from_pretrained(pipe.save_pretrained(tmp_path / "pipe"))
    assert torch.equal(loaded(audio, reference).video, clips.video)
    with pytest.raises(MediaError, match="expected an image"):
        pipe(audio, audio)


@pytest.mark.parametrize("build", [proav_pipeline, proav_packed_pipeline, av_dit_pipeline, read_pipeline])
def test_a_folder_loads_in_bfloat16_and_samples_close_to_float32(tmp_path, build):
    folder = build().save_pretrained(tmp_path / "pipe")
    full, half = Pipeline.from_pretrained(folder), Pipeline.from_pretrained(folder, dtype=torch.bfloat16)
    assert next(half.denoiser.parameters()).dtype == torch.bfloat16
    if isinstance(full, ReadPipeline):
        wave = torch.sin(torch.arange(16000) / 5.0)[None] * 0.3
        run = dict(audio=wave, reference=torch.zeros(3, 16, 16), frames=4)
    else:
        run = dict(labels=[0, 1], steps=2, progress=False)
    a, b = full(**run), half(**run)
    assert b.video.dtype == torch.float32 and b.video.shape == a.video.shape
    assert 0 < (a.video - b.video).abs().mean() < 0.1  # bf16 weights: close, not equal
