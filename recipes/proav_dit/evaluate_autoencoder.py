"""Evaluate a trained MDSA autoencoder on held-out clips.

    avblocks run proav_dit.evaluate_autoencoder run_dir=outputs/autoencoder [clips=64]

Writes ``eval/metrics.json`` and, for the first few clips, side-by-side mp4 files (original
left, reconstruction right, with the reconstructed audio) and PNG previews.

Metrics: video PSNR and SSIM (frames in [-1, 1]); audio log-spectral distance (on the mel
power spectrogram, dB-free log10 units) and mel L1 (natural-log mel); event sync of the
reconstruction (onsets found in the vocoded reconstructed audio vs bounces found in the
reconstructed video, within one frame), next to the same score for the originals; the audio
onsets kept (of the onsets found in the original waveform, the share found again within one
frame in the vocoded reconstruction: what real audio, which has no ground-truth events, can
say about timing); and, on the synthetic set, the recall of the ground-truth events in each
reconstructed modality.
"""

import json
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from avblocks.atomic import atomic_write_json
from avblocks.data import write_mp4
from avblocks.data.preview import save_preview
from avblocks.device import HOST, to_device
from avblocks.latent.mdsa import MDSA
from avblocks.metrics.reconstruction import log_spectral_distance, video_psnr, video_ssim
from avblocks.metrics.sync import (
    batch_sync_score,
    detect_audio_onsets,
    detect_bounces,
    match_events,
)
from recipes.common.config import load_config, parse_cli
from recipes.common.data import ClipData
from recipes.proav_dit.config import AutoencoderRecipe, EvaluateAutoencoderConfig


def _events(mask: torch.Tensor) -> list[int]:
    return mask.nonzero().flatten().tolist()


@torch.no_grad()
def evaluate(model: MDSA, data: ClipData, out_dir: Path, *, num_clips: int = 32, batch_size: int = 8,
             write: int = 4) -> dict:
    model.eval()
    device = next(model.parameters()).device  # the clips go where the model is; metrics on the CPU
    data.to(device)
    out_dir.mkdir(parents=True, exist_ok=True)
    loader = DataLoader(data.held_out(num_clips), batch_size=batch_size)
    sums = {"psnr": 0.0, "ssim": 0.0, "lsd": 0.0, "mel_l1": 0.0}
    real_v, real_a, rec_v_all, rec_a_all = [], [], [], []
    video_recall = audio_recall = onsets_kept = None
    count = 0
    for batch in loader:
        if count >= num_clips:
            break
        video, audio, _ = data.model_inputs(to_device(batch, device))
        rec_video, rec_audio, _ = model(video, audio)
        rec_wave = data.waveform(rec_audio).to(HOST)
        video, audio, rec_video, rec_audio = (x.to(HOST) for x in (video, audio, rec_video.clamp(-1, 1), rec_audio))
        n = video.shape[0]
        sums["psnr"] += video_psnr(rec_video, video).sum().item()
        sums["ssim"] += video_ssim(rec_video, video).sum().item()
        log_mel, rec_log_mel = data.audio.log_mel(audio)[:, 0], data.audio.log_mel(rec_audio)[:, 0]
        sums["lsd"] += log_spectral_distance((2 * rec_log_mel).exp(), (2 * log_mel).exp()).sum().item()
        sums["mel_l1"] += (rec_log_mel - log_mel).abs().mean(dim=(1, 2)).sum().item()
        real_v.append(video), real_a.append(batch["audio"].reshape(n, -1))
        rec_v_all.append(rec_video), rec_a_all.append(rec_wave)
        for i in range(n):
            kept = match_events(detect_audio_onsets(rec_wave[i], data.spec.sample_rate, data.spec.fps),
                                detect_audio_onsets(real_a[-1][i], data.spec.sample_rate, data.spec.fps),
                                tolerance=1)
            onsets_kept = kept if onsets_kept is None else onsets_kept + kept
        if "event_frames" in batch:
            for i in range(n):
                truth = _events(batch["event_frames"][i])
                v = match_events(detect_bounces(rec_video[i]), truth, tolerance=1)
                a = match_events(detect_audio_onsets(rec_wave[i], data.spec.sample_rate, data.spec.fps),
                                 truth, tolerance=1)
                video_recall = v if video_recall is None else video_recall + v
                audio_recall = a if audio_recall is None else audio_recall + a
        for i in range(max(0, min(n, write - count))):
            side = torch.cat([video[i], rec_video[i]], dim=-1)
            write_mp4(out_dir / f"clip{count + i:02d}_original_vs_reconstruction.mp4", side, rec_wave[i],
                      data.spec.fps, data.spec.sample_rate)
            save_preview(out_dir / f"clip{count + i:02d}_reconstruction.png", rec_video[i], rec_wave[i],
                         data.spec.sample_rate, fps=data.spec.fps, title="reconstruction")
        count += n
    spec = data.spec
    real = batch_sync_score(torch.cat(real_v), torch.cat(real_a), spec.sample_rate, spec.fps)
    rec = batch_sync_score(torch.cat(rec_v_all), torch.cat(rec_a_all), spec.sample_rate, spec.fps)
    metrics = {k: v / count for k, v in sums.items()} | {
        "clips": count,
        "sync_reconstruction": rec.score,
        "sync_reconstruction_reverse": rec.reverse_score,
        "sync_original": real.score,
        "onsets_kept": onsets_kept.recall,
        "onsets_in_original": onsets_kept.reference,
    }
    if video_recall is not None:
        metrics["event_recall_video"] = video_recall.recall
        metrics["event_recall_audio"] = audio_recall.recall
    atomic_write_json(out_dir / "metrics.json", metrics, nan_as_null=True)
    return metrics


def main(argv=None) -> dict:
    cfg = parse_cli(EvaluateAutoencoderConfig, argv, description=__doc__.splitlines()[0])
    run_dir = Path(cfg.run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{run_dir} is not an autoencoder run folder (no config.yaml)")
    config = load_config(AutoencoderRecipe, run_dir / "config.yaml")
    model = MDSA.from_pretrained(run_dir / "model")
    metrics = evaluate(model, ClipData(config.data), run_dir / "eval", num_clips=cfg.clips)
    print(json.dumps(metrics, indent=2))
    return metrics


if __name__ == "__main__":
    main()
