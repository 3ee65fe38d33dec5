"""Does READ's denoiser use the audio? Its flow-matching loss on held-out clips with the right
audio, with no audio (the guidance null) and with another clip's audio.

    PYTHONPATH=. python benchmarks/read_audio_use.py outputs/read_a2v_tiny [--clips 64] [--batches 16]

The examples are the training objective's (:func:`recipes.read_a2v.train.training_example`, the
run's asynchronous schedule), drawn on held-out clips with fixed seeds; the three conditions
share every example, time and noise, so their losses differ only by what the audio input holds.
A denoiser that ignores its audio gives three equal losses.
"""

import argparse
import json

import torch

from avblocks.diffusion import FlowMatching
from recipes.common.data import ClipData
from recipes.read_a2v.generate import load_run
from recipes.read_a2v.train import build_schedule, step_generator, training_example


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--batches", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cfg, pipe = load_run(args.run_dir)
    data = ClipData(cfg.data)
    video, audio, _ = data.model_inputs(data.held_out_batch(args.clips))
    clips = {"video": video, "audio": audio}
    codes = pipe.codec.codes_of_frames(audio)
    schedule, flow, model = build_schedule(cfg), FlowMatching(), pipe.denoiser
    totals = {"right audio": 0.0, "no audio": 0.0, "another clip's audio": 0.0}
    with torch.no_grad():
        for step in range(args.batches):
            g = step_generator(1234, step)
            index = torch.randperm(args.clips, generator=g)[: args.batch_size].tolist()
            x0, right = training_example(clips, index, codes, cfg.schedule.motion_frames, g)
            t, mask = schedule.training_timesteps(x0.shape[0], generator=g)
            noise = torch.randn(x0.shape, generator=g)
            conditions = {"right audio": {"audio": right},
                          "no audio": {"audio": right, "drop_audio": torch.ones(len(index), dtype=torch.bool)},
                          "another clip's audio": {"audio": right.roll(1, dims=0)}}
            for name, kwargs in conditions.items():
                totals[name] += float(flow.loss(model, x0, t=t, noise=noise, clean_mask=mask, model_kwargs=kwargs))
    losses = {name: round(total / args.batches, 5) for name, total in totals.items()}
    print(json.dumps(losses))
    return losses


if __name__ == "__main__":
    main()
