"""Feature extractors for Fréchet / kernel distances: shapes, invariances, save/load, the
ranking of obvious corruptions by a briefly trained network, the TorchScript loader, errors."""

import json
import warnings

import pytest
import torch
import torchaudio
from torch import Tensor, nn

from avblocks.metrics.distribution import frechet_distance, kernel_distance
from avblocks.metrics.features import (
    FeatureExtractor,
    audio_distances,
    distribution_distances,
    extract_audio_features,
    extract_video_features,
    video_distances,
)
from avblocks.metrics.synthetic_features import SyntheticFeatureNet
from avblocks.metrics.torchscript_features import TorchScriptFeatures
from avblocks.saveload import CheckpointError
from recipes.common.feature_net import (
    AUDIO_CORRUPTIONS,
    VIDEO_CORRUPTIONS,
    load_split,
    synthetic_split,
)
from recipes.features.train import main as train_features_main

TINY = dict(
    dim=16, channels=(8, 16), temporal_channels=16, num_classes=4, num_frames=8, size=16,
    fps=8, sample_rate=16000, n_fft=800, hop=200, n_mels=32, groups=4,
)
SR = 16000


def tiny_net(**overrides) -> SyntheticFeatureNet:
    return SyntheticFeatureNet(**(TINY | overrides)).eval()


def clips(batch: int = 3, frames: int = 8, size: int = 16) -> tuple[Tensor, Tensor]:
    video = torch.rand(batch, 3, frames, size, size) * 2 - 1
    audio = torch.randn(batch, frames * SR // 8) * 0.1
    return video, audio


# ------------------------------------------------------------------------------------------
# Shapes and invariances of the synthetic-set network
# ------------------------------------------------------------------------------------------


def test_feature_shapes_are_one_unit_scale_vector_per_clip():
    net = tiny_net()
    video, audio = clips(batch=5)
    v, a = net.video_features(video), net.audio_features(audio, SR)
    # The 16-wide embedding, then mean and std of the 8 first-stage channels.
    assert net.feature_dim == 16 + 2 * 8
    assert v.shape == (5, 32) and a.shape == (5, 32)
    # Each block is standardised per clip: mean 0 and (biased) variance s^2 / (s^2 + eps) over
    # its width, just under 1 (eps = 1e-5 matters while an untrained pre-norm scale s is small).
    for f in (v[:, :16], v[:, 16:], a[:, :16], a[:, 16:]):
        torch.testing.assert_close(f.mean(dim=1), torch.zeros(5), atol=1e-5, rtol=0)
        variance = f.var(dim=1, unbiased=False)
        assert ((variance > 0.95) & (variance <= 1.0 + 1e-5)).all(), variance
    heads = net.heads(video, audio)
    assert heads["video_class"].shape == heads["audio_class"].shape == (5, 4)
    assert heads["video_events"].shape == heads["audio_events"].shape == (5, 8)
    assert set(net.modalities) == {"video", "audio"}


def test_features_of_a_clip_do_not_depend_on_its_batch():
    net = tiny_net()
    video, audio = clips(batch=4)
    together_v, together_a = net.video_features(video), net.audio_features(audio, SR)
    for i in range(4):
        torch.testing.assert_close(net.video_features(video[i : i + 1])[0], together_v[i], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(net.audio_features(audio[i : i + 1], SR)[0], together_a[i], atol=1e-5, rtol=1e-4)


def test_frames_of_another_size_are_resized():
    # A constant-colour clip is the same clip at any size: resizing must not change it.
    net = tiny_net()
    colours = torch.tensor([[0.3, -0.5, 0.8], [-0.9, 0.1, 0.0]]).view(2, 3, 1, 1, 1)
    small = colours.expand(2, 3, 8, 16, 16).contiguous()
    large = colours.expand(2, 3, 8, 40, 40).contiguous()
    torch.testing.assert_close(net.video_features(large), net.video_features(small), atol=1e-5, rtol=1e-4)


def test_waveforms_at_another_rate_are_resampled():
    net = tiny_net()
    _, audio = clips(batch=2)
    up = torchaudio.functional.resample(audio, SR, 2 * SR)
    direct = net.audio_features(audio, SR)
    resampled = net.audio_features(up, 2 * SR)
    # Up then down again is not bit exact (band edge), but the features barely move.
    assert (resampled - direct).abs().max() < 0.05
    # Trailing samples beyond num_frames whole frames are ignored.
    longer = torch.cat([audio, torch.randn(2, 777)], dim=1)
    torch.testing.assert_close(net.audio_features(longer, SR), direct)


def test_save_load_round_trip(tmp_path):
    net = tiny_net(dim=12)
    net.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["class"] == "SyntheticFeatureNet" and saved["config"]["dim"] == 12
    loaded = SyntheticFeatureNet.from_pretrained(tmp_path).eval()
    assert loaded.config == net.config
    video, audio = clips()
    torch.testing.assert_close(loaded.video_features(video), net.video_features(video), rtol=0, atol=0)
    torch.testing.assert_close(loaded.audio_features(audio, SR), net.audio_features(audio, SR), rtol=0, atol=0)
    # A folder whose config was changed after the save is refused, naming the file and the check.
    saved["config"]["dim"] = 10
    (tmp_path / "config.json").write_text(json.dumps(saved))
    with pytest.raises(CheckpointError, match=r"config.json is damaged: its config's SHA-256"):
        SyntheticFeatureNet.from_pretrained(tmp_path)


# ------------------------------------------------------------------------------------------
# Distances
# ------------------------------------------------------------------------------------------


def test_distribution_distances_are_the_two_formulas():
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(40, 6, generator=gen), torch.randn(50, 6, generator=gen) + 0.7
    d = distribution_distances(a, b, subset_size=30, num_subsets=7, seed=3)
    assert d["frechet"] == frechet_distance(a, b)
    assert d["kernel"] == kernel_distance(a, b, subset_size=30, num_subsets=7, seed=3)
    assert distribution_distances(a, a)["frechet"] == pytest.approx(0.0, abs=1e-6)


def test_extract_takes_a_tensor_or_batches():
    net = tiny_net()
    video, audio = clips(batch=5)
    torch.testing.assert_close(
        extract_video_features(net, video, batch_size=2), extract_video_features(net, [video[:3], video[3:]])
    )
    features = extract_audio_features(net, audio, SR, batch_size=4)
    assert features.shape == (5, 32) and not features.requires_grad


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The recipe's entry point on a tiny config: a few dozen steps, model and report saved."""
    out = tmp_path_factory.mktemp("features")
    overrides = [f"model.{k}={list(v) if isinstance(v, tuple) else v}" for k, v in TINY.items()]
    report = train_features_main([
        *overrides, "optim.steps=60", "optim.batch_size=8", "optim.warmup=3",
        "data.held_out_clips=48", "run.log_every=20", "run.progress=false",
        "run.distances=false", "run.threads=0", f"run.output_dir={out}",
    ])
    return out, report


def test_entry_point_writes_a_loadable_model_and_a_report(trained):
    out, report = trained
    assert json.loads((out / "report.json").read_text())["held_out"] == report["held_out"]
    losses = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in losses] == [20, 40, 60]
    assert losses[-1]["total"] < losses[0]["total"]
    net = SyntheticFeatureNet.from_pretrained(out / "model")
    assert net.config.num_frames == 8
    # 60 steps already separate the classes far above chance (0.25): pitch and colour are easy.
    assert report["held_out"]["audio_class_accuracy"] > 0.6
    assert report["held_out"]["video_class_accuracy"] > 0.6


def test_the_feature_run_is_watched_in_tensorboard(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, _ = trained
    events = EventAccumulator(str(out))
    events.Reload()
    assert {"loss/total", "lr", "grad_norm", "throughput/clips_per_s", "memory/peak_rss_mib"} <= set(
        events.Tags()["scalars"])
    logged = [json.loads(line)["total"] for line in (out / "log.jsonl").read_text().splitlines()]
    curve = events.Scalars("loss/total")
    assert [e.step for e in curve] == [19, 39, 59]  # the loss of step s (0-based), logged as s + 1
    assert [e.value for e in curve] == pytest.approx(logged, rel=1e-6)


@pytest.fixture(scope="module")
def splits(trained):
    """The trained tiny net, two real held-out splits (other seeds), and split A's features."""
    out, _ = trained
    net = SyntheticFeatureNet.from_pretrained(out / "model").eval()
    cfg = net.config
    a = load_split(synthetic_split(cfg, num_clips=128, seed=10_000))
    b = load_split(synthetic_split(cfg, num_clips=128, seed=20_000))
    features = {"video": extract_video_features(net, a["video"]),
                "audio": extract_audio_features(net, a["audio"], SR)}
    return net, a, b, features


def _distances(net, features, modality, clips):
    if modality == "video":
        other = extract_video_features(net, clips)
    else:
        other = extract_audio_features(net, clips, SR)
    return distribution_distances(features[modality], other, subset_size=128, num_subsets=10)


def test_identical_sets_are_at_distance_zero(splits):
    net, a, _, _ = splits
    assert video_distances(net, a["video"], a["video"])["frechet"] == pytest.approx(0.0, abs=1e-4)
    assert audio_distances(net, a["audio"], a["audio"], SR)["frechet"] == pytest.approx(0.0, abs=1e-4)


@pytest.mark.parametrize("name", ["frames shuffled", "first frame frozen", "pixel noise (std 0.3)",
                                  "colours swapped (RGB->BGR)", "upside down"])
def test_video_corruptions_are_farther_than_another_real_split(splits, name):
    net, _, b, features = splits
    real = _distances(net, features, "video", b["video"])
    corrupted = _distances(net, features, "video",
                           VIDEO_CORRUPTIONS[name](b["video"], torch.Generator().manual_seed(0)))
    assert corrupted["frechet"] > 1.5 * real["frechet"], (name, real, corrupted)
    assert corrupted["kernel"] > real["kernel"], (name, real, corrupted)


@pytest.mark.parametrize("name", ["replaced by white noise", "noise added (10 dB SNR)",
                                  "frame segments shuffled", "pitch up x1.5"])
def test_audio_corruptions_are_farther_than_another_real_split(splits, name):
    net, _, b, features = splits
    real = _distances(net, features, "audio", b["audio"])
    corrupted = _distances(net, features, "audio", AUDIO_CORRUPTIONS[name](
        b["audio"], torch.Generator().manual_seed(0), net.samples_per_frame))
    assert corrupted["frechet"] > 1.5 * real["frechet"], (name, real, corrupted)
    assert corrupted["kernel"] > real["kernel"], (name, real, corrupted)


def test_corruptions_keep_shapes_and_ranges(splits):
    _, _, b, _ = splits
    gen = torch.Generator().manual_seed(0)
    for fn in VIDEO_CORRUPTIONS.values():
        out = fn(b["video"][:4], gen)
        assert out.shape == b["video"][:4].shape and out.abs().max() <= 1
    for fn in AUDIO_CORRUPTIONS.values():
        out = fn(b["audio"][:4], gen, 2000)
        assert out.shape == b["audio"][:4].shape and out.abs().max() <= 1
    # Shuffling frames permutes them: the multiset of frames of every clip is unchanged.
    shuffled = VIDEO_CORRUPTIONS["frames shuffled"](b["video"][:2], gen)
    for original, moved in zip(b["video"][:2], shuffled):
        assert sorted(original.sum(dim=(0, 2, 3)).tolist()) == pytest.approx(sorted(moved.sum(dim=(0, 2, 3)).tolist()))


# ------------------------------------------------------------------------------------------
# TorchScript extractors
# ------------------------------------------------------------------------------------------


class _VideoStats(nn.Module):
    """Per clip: mean, min, max, width, frames (times ``scale``)."""

    def forward(self, x: Tensor, scale: float = 1.0) -> Tensor:
        flat = x.flatten(1)
        width = torch.full_like(flat[:, 0], float(x.shape[-1]))
        frames = torch.full_like(flat[:, 0], float(x.shape[2]))
        return scale * torch.stack([flat.mean(1), flat.amin(1), flat.amax(1), width, frames], dim=1)


class _AudioSegments(nn.Module):
    """Per 100-sample segment: mean square and the total length -> ``b k 2``."""

    def forward(self, x: Tensor) -> Tensor:
        segments = x.unfold(-1, 100, 100)
        energy = segments.square().mean(-1)
        return torch.stack([energy, torch.full_like(energy, float(x.shape[-1]))], dim=-1)


def _script(module: nn.Module, path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(module), str(path))


def test_torchscript_video_round_trip(tmp_path):
    path = tmp_path / "i3d_like.pt"
    _script(_VideoStats(), path)
    extractor = TorchScriptFeatures(path, modality="video", input_size=(12, 10),
                                    value_range=(0.0, 255.0), call_kwargs={"scale": 2.0})
    assert isinstance(extractor, FeatureExtractor) and extractor.modalities == ("video",)
    video = torch.zeros(2, 3, 5, 20, 20)
    video[0, :, :, :, :] = -1.0
    video[0, 0, 0, 0, 0] = 1.0  # one white pixel: max 255 (before the x2 scale)
    video[1] = 0.5  # constant: 0.75 * 255 everywhere
    f = extractor.video_features(video)
    assert f.shape == (2, 5)
    assert f[:, 3].tolist() == [20.0, 20.0] and f[:, 4].tolist() == [10.0, 10.0]  # x2 scale
    assert f[1, 0].item() == pytest.approx(2 * 0.75 * 255, rel=1e-5)
    assert f[0, 1].item() == pytest.approx(0.0, abs=1e-4)
    with pytest.raises(NotImplementedError, match="no audio features.*video"):
        extractor.audio_features(torch.zeros(1, 100), SR)


def test_torchscript_audio_resamples_and_averages_segments(tmp_path):
    path = tmp_path / "vggish_like.pt"
    _script(_AudioSegments(), path)
    extractor = TorchScriptFeatures(path, modality="audio", sample_rate=8000)
    waveform = torch.zeros(2, 16000)
    waveform[0] = 0.5  # constant: resampling keeps it (away from the edges)
    f = extractor.audio_features(waveform, SR)
    assert f.shape == (2, 2)
    assert f[:, 1].tolist() == [8000.0, 8000.0]  # 1 s at 8 kHz
    assert f[0, 0].item() == pytest.approx(0.25, rel=0.02)  # mean over segments of 0.5^2
    assert f[1, 0].item() == 0.0
    direct = extractor.audio_features(torchaudio.functional.resample(waveform, SR, 8000), 8000)
    torch.testing.assert_close(f, direct)
    assert extract_audio_features(extractor, waveform, SR).shape == (2, 2)


def test_torchscript_loader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        TorchScriptFeatures(tmp_path / "missing.pt", modality="video")
    state_dict = tmp_path / "state.pt"
    torch.save({"w": torch.ones(2)}, state_dict)
    with pytest.raises(ValueError, match="not a TorchScript archive"):
        TorchScriptFeatures(state_dict, modality="video")
    path = tmp_path / "segments.pt"
    _script(_AudioSegments(), path)
    with pytest.raises(ValueError, match="needs sample_rate"):
        TorchScriptFeatures(path, modality="audio")
    with pytest.raises(ValueError, match="modality"):
        TorchScriptFeatures(path, modality="text")  # type: ignore[arg-type]
    # A module whose output is neither b d nor b k d nor b d 1 .. 1.
    as_video = TorchScriptFeatures(path, modality="video")
    with pytest.raises(ValueError, match="returned shape"):
        as_video.video_features(torch.zeros(2, 3, 4, 8, 100))  # b 3 4 8 k 2 -> 5 dims, not 1s


# ------------------------------------------------------------------------------------------
# Errors naming the bad input
# ------------------------------------------------------------------------------------------


def test_bad_inputs_raise_naming_what_is_wrong():
    net = tiny_net()
    video, audio = clips()
    with pytest.raises(ValueError, match=r"b 3 t h w.*\(3, 1, 8, 16, 16\)"):
        net.video_features(video[:, :1])
    with pytest.raises(ValueError, match="uint8.*127.5"):
        net.video_features(((video + 1) * 127.5).to(torch.uint8))
    with pytest.raises(ValueError, match=r"\[-1, 1\].*255"):
        net.video_features((video + 1) * 127.5)
    with pytest.raises(ValueError, match="5 frames.*num_frames = 8"):
        net.video_features(video[:, :, :5])
    with pytest.raises(ValueError, match="mono"):
        net.audio_features(audio[:, None].expand(3, 2, -1), SR)
    with pytest.raises(ValueError, match="4 frames.*num_frames = 8"):
        net.audio_features(audio[:, : 4 * 2000], SR)
    with pytest.raises(ValueError, match="sample_rate"):
        net.audio_features(audio, 0)
    with pytest.raises(ValueError, match="NaN"):
        net.audio_features(audio * float("nan"), SR)


def test_bad_constructor_arguments_raise():
    with pytest.raises(ValueError, match="size"):
        SyntheticFeatureNet(**(TINY | {"channels": (4, 4, 4, 4, 4), "size": 16}))
    with pytest.raises(ValueError, match="whole number"):
        SyntheticFeatureNet(**(TINY | {"hop": 300}))
    with pytest.raises(ValueError, match="dim"):
        SyntheticFeatureNet(**(TINY | {"dim": 0}))
