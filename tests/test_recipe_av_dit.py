"""The AV-DiT recipe on a tiny config: the image layout, the model's identity at init, the
three entry points (losses vs a stored reference, frozen weights untouched, exact resume), the
pipeline folder the adapters stage saves (sampled to playable mp4 files with sound) and the
comparison with a ProAV-DiT run folder (built here from library parts only)."""

import json
import os
import shutil
from fractions import Fraction
from pathlib import Path

import pytest
import torch
import yaml

from avblocks.codecs import ImageLatentCodec, TriPlaneCodec
from avblocks.config import ConfigError, config_to_dict
from avblocks.data import read_clip
from avblocks.data.media import MediaError, probe
from avblocks.dit.adapter_io import count_parameters
from avblocks.dit.av_dit import AVDiT
from avblocks.dit.dit import DiT, DiTConfig
from avblocks.dit.stdit import STDiT
from avblocks.latent.mdsa import MDSA
from avblocks.metrics.synthetic_features import SyntheticFeatureNet
from avblocks.pipelines import AVDiTPipeline, DDPMSampling, ProAVDiTPipeline
from recipes import cli
from recipes.av_dit import compare, pretrain, train, train_autoencoder
from recipes.av_dit.codec import encode_clips, load_codec
from recipes.av_dit.config import AutoencoderRecipe, AVDiTRecipe, CompareConfig
from recipes.common.config import load_config
from recipes.common.data import DataConfig

REFERENCE = Path(__file__).parent / "references" / "av_dit_tiny_losses.json"
DATA = ["data.num_clips=8", "data.num_frames=4", "data.size=16", "run.progress=false"]
AE = [*DATA, "audio_images=2", "model.hidden_channels=8", "model.depth=1", "model.groups=2",
      "optim.steps=2", "optim.batch_size=2", "optim.warmup=1", "run.eval_clips=2"]
PRE = ["model.hidden_size=32", "model.depth=2", "model.num_heads=2", "optim.steps=2",
       "optim.batch_size=4", "optim.warmup=1", "run.progress=false"]
AV = ["optim.steps=4", "optim.batch_size=4", "optim.warmup=1", "run.checkpoint_every=2",
      "run.log_every=1", "run.progress=false", "model.lora_rank=2", "model.fusion_every=1"]


@pytest.fixture(scope="module")
def stages(tmp_path_factory) -> dict[str, Path]:
    ae, pre = tmp_path_factory.mktemp("ae"), tmp_path_factory.mktemp("pre")
    train_autoencoder.main([*AE, f"run.output_dir={ae}"])
    pretrain.main([*PRE, f"autoencoder={ae}", f"run.output_dir={pre}"])
    return {"ae": ae, "pre": pre}


def run_av_dit(out: Path, stages: dict[str, Path], *extra: str) -> dict:
    return train.main([*AV, f"autoencoder={stages['ae']}", f"pretrained={stages['pre']}",
                       f"run.output_dir={out}", *extra])


def losses(out: Path) -> list[float]:
    lines = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return [line["total"] for line in lines if "total" in line]  # not the validation / sample lines


# ---- the image layout ---------------------------------------------------------------------


def test_audio_images_hold_the_sound_of_their_frame_group():
    spec = DataConfig(num_clips=1, num_frames=8, size=16).spec()
    layout = ImageLatentCodec(spec, audio_images=4)  # each image: 2 video frames = 20 columns
    frames = torch.zeros(1, 1, 8, 64, 10)
    frames[:, :, 5] = 1.0  # sound in video frame 5 only -> audio image 2
    images = layout.audio_to_images(frames)
    assert images.shape == (1, 3, 4, 16, 16)
    energy = images.abs().sum(dim=(1, 3, 4))[0]
    assert energy[2] > 0 and torch.all(energy[[0, 1, 3]] == 0)
    # within image 2, the sound sits in its right half (the second of its two frames)
    assert images[0, 0, 2, :, :6].abs().sum() == 0 and images[0, 0, 2, :, 10:].abs().sum() > 0
    constant = torch.full((2, 1, 8, 64, 10), 0.3)  # bilinear resizing keeps constants exactly
    torch.testing.assert_close(layout.images_to_audio(layout.audio_to_images(constant)), constant)
    with pytest.raises(ValueError, match=r"audio_images \(3\) must divide the clip's 8 frames"):
        ImageLatentCodec(spec, audio_images=3)


# ---- the model ----------------------------------------------------------------------------


def tiny_av_dit(**overrides) -> tuple[AVDiT, DiT]:
    dit_cfg = DiTConfig(input_size=4, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=2,
                        num_classes=8, learn_sigma=True)
    dit = DiT(**vars(dit_cfg))
    with torch.no_grad():  # a "trained" backbone: DiT's zero-init would make every block trivial
        for name, p in dit.named_parameters():
            if name != "pos_embed":
                p.add_(0.1 * torch.randn_like(p))
    model = AVDiT(dit=dit_cfg, video_frames=4, audio_images=2, num_clip_classes=4, audio_label_offset=4,
                  fusion_every=1, **overrides)
    model.load_frozen(dit)
    return model.eval(), dit.eval()


@pytest.mark.parametrize(("class_labels", "frame_local"), [("pretrained", False), ("adapter", False),
                                                          ("pretrained", True)])
def test_fresh_av_dit_is_the_frozen_dit_on_every_image(class_labels, frame_local):
    model, dit = tiny_av_dit(class_labels=class_labels, fusion_frame_local=frame_local)
    assert model.fusion.audio_columns == (2 if frame_local else 0)  # 4 x 4 latents, 2 x 2 patches
    x, t, y = torch.randn(2, 4, 6, 4, 4), torch.tensor([3, 700]), torch.tensor([1, 3])
    out = model(x, t, y)
    for i in range(6):
        if class_labels == "pretrained":
            label = y if i < 4 else y + 4
        else:  # the adapter table starts at zero: the unconditional frozen DiT
            label = torch.full_like(y, dit.null_label)
        torch.testing.assert_close(out[:, :, i], dit(x[:, :, i], t, label)[:, :4], atol=1e-6, rtol=1e-5)
    per_image = model(x, t[:, None].expand(2, 6), y)  # b (tv + ta) steps, all equal
    torch.testing.assert_close(per_image, out, atol=1e-6, rtol=1e-5)


def test_parameter_counts_and_bad_inputs():
    model, dit = tiny_av_dit(bottleneck=8)
    counts = model.parameter_counts()
    assert (counts["trainable"], counts["total"]) == count_parameters(model)
    assert counts["frozen"] == sum(p.numel() for p in dit.parameters())
    assert counts["trainable"] == sum(counts[k] for k in ("temporal", "bottleneck", "fusion", "lora", "label_adapter"))
    assert 0 < counts["trainable_share"] < 1
    with pytest.raises(ValueError, match=r"expected \(b, 4, 6 = 4 frames \+ 2 audio images, 4, 4\)"):
        model(torch.randn(1, 4, 5, 4, 4), torch.tensor([1]), torch.tensor([0]))
    with pytest.raises(ValueError, match="labels \\[5\\] out of range"):
        model(torch.randn(1, 4, 6, 4, 4), torch.tensor([1]), torch.tensor([5]))
    with pytest.raises(ValueError, match="beyond the DiT's 8 classes"):
        AVDiT(dit=DiTConfig(input_size=4, hidden_size=32, depth=1, num_heads=2, num_classes=8),
              num_clip_classes=4, audio_label_offset=5)


# ---- the entry points ---------------------------------------------------------------------


def test_autoencoder_stage_calibrates_the_latent_scale(stages):
    codec, data = load_codec(stages["ae"])
    assert codec.spec == data.spec and (codec.num_frames, codec.audio_images) == (4, 2)
    latents, labels = encode_clips(data, codec.encode_frames)
    assert latents.shape == (8, 4, 6, 4, 4)  # 4 frames + 2 audio images of 4x4 latents
    assert labels.tolist() == [int(data.dataset[i]["label"]) for i in range(8)]
    assert latents[:2].std().item() == pytest.approx(1.0, rel=0.05)  # calibrated on these clips
    assert json.loads((stages["ae"] / "eval.json").read_text())["video_psnr_db"] > 0


def test_adapters_train_frozen_weights_stay_and_resume_is_exact(tmp_path, stages):
    result = run_av_dit(tmp_path, stages)
    observed = losses(tmp_path)
    if os.environ.get("AVBLOCKS_UPDATE_REFERENCES") == "1":
        REFERENCE.write_text(json.dumps(observed, indent=1) + "\n")
    assert observed == pytest.approx(json.loads(REFERENCE.read_text()), rel=1e-4)
    counts = json.loads((tmp_path / "parameters.json").read_text())
    assert result["parameters"] == counts and counts["trainable"] < counts["frozen"]

    model = AVDiT.from_pretrained(tmp_path / "model")
    frozen = DiT.from_pretrained(stages["pre"] / "model").state_dict()
    trained = model.dit.state_dict()
    assert all(torch.equal(trained[k], v) for k, v in frozen.items())  # bit-identical backbone
    for name, p in model.named_parameters():  # every zero-initialised adapter output has moved
        if name.endswith(("lora_B", "to_out.weight")):
            assert p.requires_grad and p.abs().sum() > 0, name

    final = model.state_dict()
    (tmp_path / "checkpoints" / "step_00000004.pt").unlink()
    log = (tmp_path / "log.jsonl").read_text().splitlines()
    (tmp_path / "log.jsonl").write_text("".join(line + "\n" for line in log[:2]))
    run_av_dit(tmp_path, stages)
    assert losses(tmp_path) == observed
    resumed = AVDiT.from_pretrained(tmp_path / "model").state_dict()
    assert all(torch.equal(final[k], resumed[k]) for k in final)


def test_adapters_stage_saves_a_pipeline_that_samples_playable_mp4s(tmp_path, stages):
    run_av_dit(tmp_path, stages, "optim.steps=1", "sample.steps=3", "sample.cfg_scale=1.5")
    folder = tmp_path / "moved"  # self-contained: it needs nothing from the run folder around it
    shutil.move(tmp_path / "pipeline", folder)
    pipe = AVDiTPipeline.from_pretrained(folder)
    spec = pipe.spec
    assert (spec.num_frames, spec.size, spec.fps, spec.sample_rate) == (4, (16, 16), Fraction(8), 16000)
    assert pipe.codec.audio_images == 2
    assert pipe.sampling == DDPMSampling(schedule="linear", num_timesteps=1000, steps=3, sampler="ddim",
                                         cfg_scale=1.5)
    trained = AVDiT.from_pretrained(tmp_path / "model").state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in pipe.denoiser.state_dict().items())

    clips = pipe(labels=[0, 3], progress=False)
    assert clips.video.shape == (2, 3, spec.num_frames, *spec.size)
    assert clips.audio.shape == (2, spec.num_samples) and clips.audio.abs().max() > 0
    assert clips.video.abs().max() <= 1 and clips.labels.tolist() == [0, 3]
    torch.testing.assert_close(pipe(labels=[0, 3], progress=False).video, clips.video, rtol=0, atol=0)
    with pytest.raises(ValueError, match="out of range"):
        pipe(labels=[4], progress=False)

    paths = clips.save(tmp_path / "s" / "clip.mp4")
    assert [q.name for q in paths] == ["clip_00.mp4", "clip_01.mp4"]
    info = probe(paths[0])
    assert info.fps == pytest.approx(8.0) and (info.width, info.height) == (16, 16)
    assert info.video_end - info.video_start == pytest.approx(spec.num_frames / spec.fps, abs=1e-3)
    clip = read_clip(paths[0], num_frames=spec.num_frames, fps=spec.fps, sample_rate=spec.sample_rate)
    assert clip.video.shape == (3, 4, 16, 16) and clip.fps == spec.fps
    assert clip.audio.shape == (1, spec.num_samples) and clip.audio.abs().max() > 0
    with pytest.raises(MediaError):  # the file holds exactly the clip's frames, no more
        read_clip(paths[0], num_frames=spec.num_frames + 1, fps=spec.fps, sample_rate=spec.sample_rate)
    assert clips.preview(tmp_path / "s" / "clips.png").stat().st_size > 0

    assert cli.main(["sample", str(folder), "--labels", "2", "--steps", "2", "--out", str(tmp_path / "cli.mp4")]) == 0
    cli_clip = read_clip(tmp_path / "cli.mp4", num_frames=4, fps=8, sample_rate=16000)
    assert cli_clip.video.shape == (3, 4, 16, 16) and (tmp_path / "cli.png").stat().st_size > 0


def test_configs_are_checked_before_anything_runs(capsys):
    with pytest.raises(ConfigError, match="class_labels=adapter"):
        load_config(AVDiTRecipe, None, ["dit_checkpoint=DiT-XL-2-256x256.pt"]).validate()
    with pytest.raises(ConfigError, match=r"sample.steps \(2000\) must lie in \[1, diffusion.num_timesteps"):
        load_config(AVDiTRecipe, None, ["sample.steps=2000"]).validate()
    with pytest.raises(ConfigError, match="sample.sampler"):
        load_config(AVDiTRecipe, None, ["sample.sampler=heun"])
    with pytest.raises(ConfigError, match=r"audio_images \(3\) must divide data.num_frames \(16\)"):
        load_config(AutoencoderRecipe, None, ["audio_images=3"]).validate()
    with pytest.raises(ConfigError, match="needs a pretrained image DiT"):
        load_config(CompareConfig, None, ["pretrain_fraction=0"]).validate()
    with pytest.raises(SystemExit):  # when the config is read: before the output folder exists
        train.main(["run.log_every=0", f"run.output_dir={Path('/nonexistent/av_dit')}"])
    assert "AVDiTRecipe.run.log_every (0) must be >= 1" in capsys.readouterr().err

# ---- the comparison -----------------------------------------------------------------------


def test_compare_reads_the_proav_minutes_and_lays_out_the_table(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"autoencoder": {"train_minutes": 2.5},
                                                       "dit": {"train_minutes": 1.5}}))
    cfg = load_config(CompareConfig, None, [f"proav_run={tmp_path}"])
    assert compare.proav_minutes(cfg) == (2.5, 1.5)
    cfg = load_config(CompareConfig, None, [f"proav_run={tmp_path}", "proav_dit_minutes=4"])
    assert compare.proav_minutes(cfg) == (2.5, 4.0)
    with pytest.raises(ValueError, match="give proav_autoencoder_minutes"):
        compare.proav_minutes(load_config(CompareConfig, None, [f"proav_run={tmp_path / 'none'}"]))

    def metrics(score):
        return {"sync_generated": {"score": score, "reverse": 0.5}, "sync_real": {"score": 1.0},
                "sync_shuffled": {"score": 0.25}, "video_frechet": 3.0, "video_kernel": 0.1,
                "audio_frechet": 2.0, "audio_kernel": 0.2}

    report = {"av_dit": {"metrics": metrics(0.75), "minutes": {"autoencoder": 1, "pretrain": 0.5, "adapters": 0.5,
                                                               "total": 2},
                         "parameters": {"trainable": 10, "total": 40, "trainable_share": 0.25}},
              "proav_dit": {"metrics": metrics(0.5), "minutes": {"autoencoder": 1, "denoiser": 1, "total": 2},
                            "parameters": {"trainable": 30, "total": 30}}}
    rows = compare.table(report).splitlines()
    assert rows[0] == "| | AV-DiT | ProAV-DiT |"
    assert "| AV-sync score (real 1.00, shuffled 0.25) | 0.75 | 0.50 |" in rows
    assert "| denoiser parameters trained / total | 10 / 40 (25.0%) | 30 / 30 (100%) |" in rows
    assert "|   autoencoder / pretraining / denoiser | 1.00 / 0.50 / 0.50 | 1.00 / - / 1.00 |" in rows


PROAV_DATA = DataConfig(num_clips=8, num_frames=4, size=16)


def write_proav_run(folder: Path, data: DataConfig = PROAV_DATA) -> None:
    """What a ProAV-DiT demo folder holds, from library parts with random weights: the
    pipeline, the autoencoder's config (a ``data`` section among others), the stages'
    training minutes and a feature network."""
    torch.manual_seed(0)
    mdsa = MDSA(hidden_channels=8, latent_channels=2, depth=1, heads=2, scales=(1,), groups=2, block_frames=2)
    codec = TriPlaneCodec(PROAV_DATA.spec(), mdsa, patch=2)
    denoiser = STDiT(in_channels=codec.channels, side=codec.side, frames=codec.num_planes, patch=2, hidden_size=32,
                     depth=1, num_heads=2, num_classes=PROAV_DATA.num_classes)
    ProAVDiTPipeline(codec, denoiser).save_pretrained(folder / "pipeline")
    (folder / "autoencoder").mkdir()
    tree = {"data": config_to_dict(data), "model": {"hidden_channels": 8}, "run": {"output_dir": "elsewhere"}}
    (folder / "autoencoder" / "config.yaml").write_text(yaml.safe_dump(tree))
    (folder / "metrics.json").write_text(json.dumps({"autoencoder": {"train_minutes": 0.5},
                                                     "dit": {"train_minutes": 0.5}, "sync_generated": {}}))
    SyntheticFeatureNet(num_frames=4, size=16, channels=(4, 8), dim=8, temporal_channels=8,
                        groups=4).save_pretrained(folder / "features" / "model")


def compare_args(proav: Path, out: Path) -> list[str]:
    def listing(key, values):
        return f"{key}=[{', '.join(repr(v) for v in values)}]"

    return [f"proav_run={proav}", f"output_dir={out}", "per_class=1", "sample_steps=2", "progress=false",
            listing("autoencoder_overrides", [o for o in AE if not o.startswith("data.")]),
            listing("pretrain_overrides", PRE),
            listing("adapter_overrides", ["optim.steps=2", "optim.batch_size=4", "optim.warmup=1"])]


def test_compare_trains_av_dit_on_the_proav_data_and_scores_both_pipelines(tmp_path, monkeypatch):
    proav, out = tmp_path / "demo", tmp_path / "cmp"
    write_proav_run(proav)
    report = compare.main(compare_args(proav, out))

    assert (out / "compare.md").read_text().endswith(report["table"])
    written = json.loads((out / "compare.json").read_text())  # strict JSON: NaN refused, null allowed
    assert written["table"] == report["table"] and written["clips"] == 4
    trained_on = load_config(AutoencoderRecipe, out / "autoencoder" / "config.yaml").data
    assert trained_on == PROAV_DATA  # the ProAV-DiT run's data section, not the stage config's
    assert AVDiTPipeline.from_pretrained(out / "adapters" / "pipeline").spec == PROAV_DATA.spec()
    for name in ("av_dit", "proav_dit"):
        mp4s = sorted((out / f"samples_{name}").glob("*.mp4"))
        assert len(mp4s) == PROAV_DATA.num_classes  # per_class=1
        clip = read_clip(mp4s[0], num_frames=4, fps=8, sample_rate=16000)
        assert clip.video.shape == (3, 4, 16, 16) and clip.audio.shape == (1, 8000)
        assert (out / f"samples_{name}" / f"{name}_contact_sheet.png").stat().st_size > 0
        assert {"video_frechet", "audio_frechet", "sync_generated"} <= report[name]["metrics"].keys()
    assert report["proav_dit"]["minutes"] == {"autoencoder": 0.5, "denoiser": 0.5, "total": 1.0}
    assert report["av_dit"]["budget_minutes"] == {"autoencoder": 0.5, "pretrain": 0.25, "adapters": 0.25}
    proav_params = count_parameters(ProAVDiTPipeline.from_pretrained(proav / "pipeline").denoiser)[1]
    assert report["proav_dit"]["parameters"] == {"trainable": proav_params, "total": proav_params}
    assert report["av_dit"]["parameters"]["trainable"] < report["av_dit"]["parameters"]["total"]
    assert report["sample_evaluations"] == 4 and report["clips"] == 4
    assert not (out / "features").exists()  # the ProAV-DiT run's feature network was used

    # a rerun reuses every finished stage and only samples and scores again
    for module in (train_autoencoder, pretrain, train):
        monkeypatch.setattr(module, "train", lambda *a, **k: pytest.fail("retrained a finished stage"))
    again = compare.main(compare_args(proav, out))
    assert again["table"] == report["table"]  # the same clips, so the same scores


def test_compare_refuses_a_proav_run_whose_pipeline_makes_other_clips(tmp_path):
    write_proav_run(tmp_path / "demo", DataConfig(num_clips=8, num_frames=8, size=16))
    with pytest.raises(ValueError, match="makes clips of"):
        compare.main(compare_args(tmp_path / "demo", tmp_path / "cmp"))
    assert not (tmp_path / "cmp" / "autoencoder").exists()  # before any training
    (tmp_path / "demo" / "autoencoder" / "config.yaml").write_text(yaml.safe_dump({"model": {}}))
    with pytest.raises(ConfigError, match="has no data section"):
        compare.main(compare_args(tmp_path / "demo", tmp_path / "cmp"))
