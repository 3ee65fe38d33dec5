"""The AV-DiT recipe on a tiny config: the image layout, the model's identity at init, the
three entry points (losses vs a stored reference, frozen weights untouched, exact resume) and
sampling to playable mp4 files with sound."""

import json
import os
from pathlib import Path

import pytest
import torch

from avblocks.config import ConfigError
from avblocks.dit.adapter_io import count_parameters
from avblocks.dit.av_dit import AVDiT
from avblocks.dit.dit import DiT, DiTConfig
from recipes.av_dit import pretrain, train, train_autoencoder
from recipes.av_dit.images import AVImages, ImageLatents
from recipes.av_dit.sample import main as sample_main
from recipes.common.config import load_config
from recipes.proav_dit.data import AVData, DataConfig

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
    return [json.loads(line)["total"] for line in (out / "log.jsonl").read_text().splitlines()]


# ---- the image layout ---------------------------------------------------------------------


def test_audio_images_hold_the_sound_of_their_frame_group():
    data = AVData(DataConfig(num_clips=1, num_frames=8, size=16))
    layout = AVImages(data, audio_images=4)  # each image: 2 video frames = 20 columns
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
    with pytest.raises(ValueError, match=r"audio_images \(3\) must divide data.num_frames \(8\)"):
        AVImages(data, audio_images=3)


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


@pytest.mark.parametrize("class_labels", ["pretrained", "adapter"])
def test_fresh_av_dit_is_the_frozen_dit_on_every_image(class_labels):
    model, dit = tiny_av_dit(class_labels=class_labels)
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
    space = ImageLatents.from_run(stages["ae"])
    latents = space.encode_dataset(space.data.dataset)["latents"]
    assert latents.shape == (8, 4, 6, 4, 4)  # 4 frames + 2 audio images of 4x4 latents
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


def test_sample_writes_mp4_files_with_sound(tmp_path, stages):
    run_av_dit(tmp_path, stages, "optim.steps=1")
    summary = sample_main([str(tmp_path), "--per-class", "1", "--steps", "2", "--out", str(tmp_path / "s")])
    mp4s = sorted((tmp_path / "s").glob("*.mp4"))
    assert summary["clips"] == len(mp4s) == 4
    from avblocks.data import read_clip

    clip = read_clip(mp4s[0], num_frames=4, fps=8, sample_rate=16000)
    assert clip.video.shape[1] == 4 and clip.audio.shape[-1] == 8000
    assert clip.audio.abs().max() > 0
    assert (tmp_path / "s" / "joint_contact_sheet.png").stat().st_size > 0


def test_configs_are_checked_before_anything_runs(tmp_path):
    cfg = load_config(train.AVDiTRecipe, None, ["dit_checkpoint=DiT-XL-2-256x256.pt"])
    with pytest.raises(ConfigError, match="class_labels=adapter"):
        train.validate(cfg)
    cfg = load_config(train_autoencoder.AutoencoderRecipe, None, ["audio_images=3"])
    with pytest.raises(ConfigError, match=r"audio_images \(3\) must divide data.num_frames \(16\)"):
        train_autoencoder.validate(cfg)


# ---- the comparison -----------------------------------------------------------------------


def test_compare_reads_the_proav_minutes_and_lays_out_the_table(tmp_path):
    from recipes.av_dit import compare

    (tmp_path / "metrics.json").write_text(json.dumps({"autoencoder": {"train_minutes": 2.5},
                                                       "dit": {"train_minutes": 1.5}}))
    cfg = load_config(compare.CompareConfig, None, [f"proav_run={tmp_path}"])
    assert compare.proav_minutes(cfg) == (2.5, 1.5)
    cfg = load_config(compare.CompareConfig, None, [f"proav_run={tmp_path}", "proav_dit_minutes=4"])
    assert compare.proav_minutes(cfg) == (2.5, 4.0)
    with pytest.raises(ValueError, match="give proav_autoencoder_minutes"):
        compare.proav_minutes(load_config(compare.CompareConfig, None, [f"proav_run={tmp_path / 'none'}"]))

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


@pytest.mark.slow
def test_compare_end_to_end_on_a_tiny_proav_demo(tmp_path):
    """Trains a tiny ProAV-DiT demo, then the three AV-DiT stages at its minutes (~1 min)."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from test_recipe_demo import args

    from recipes.av_dit import compare
    from recipes.proav_dit import demo

    demo.main(args(tmp_path / "demo"))  # its 2-step stages log 0.0 minutes: budgets given below

    def listing(key, values):
        return f"{key}=[{', '.join(repr(v) for v in values)}]"

    ae = ["audio_images=2", "model.hidden_channels=8", "model.depth=1", "model.groups=2", "optim.steps=2",
          "optim.batch_size=2", "run.eval_clips=2"]
    pre = ["model.hidden_size=32", "model.depth=2", "model.num_heads=2", "optim.steps=2", "optim.batch_size=4"]
    report = compare.main([f"proav_run={tmp_path / 'demo'}", f"output_dir={tmp_path / 'cmp'}", "per_class=1",
                           "sample_steps=2", "progress=false", "proav_autoencoder_minutes=0.01",
                           "proav_dit_minutes=0.01", listing("autoencoder_overrides", ae),
                           listing("pretrain_overrides", pre),
                           listing("adapter_overrides", ["optim.steps=2", "optim.batch_size=4"])])
    assert (tmp_path / "cmp" / "compare.md").read_text().endswith(report["table"])
    assert len(list((tmp_path / "cmp" / "samples_av_dit").glob("*.mp4"))) == 4
    assert len(list((tmp_path / "cmp" / "samples_proav_dit").glob("*.mp4"))) == 4
    assert {"video_frechet", "audio_frechet"} <= report["av_dit"]["metrics"].keys()
