"""Can READ's denoiser see the onsets in what its audio path gets? A linear probe on the codec's frame codes.

    PYTHONPATH=. python benchmarks/read_code_onsets.py outputs/read_a2v_tiny [--train 128] [--clips 64]

One least-squares linear map from a frame's code (``b t d``, the run's trained
:class:`~avblocks.audio.frame_codes.FrameAudioCodec`) to "this frame has a bounce", fitted on
training clips; on held-out clips, the share of event frames among each clip's ``k`` highest
scores (``k`` its number of events): 1.0 means every onset is visible in the code of its own
frame (not a neighbour's). The same probe on the frame's raw log-mel (mean over mel bins, per
column) is the reference; also the mean size of the code's frame-to-frame change at an onset and
elsewhere.
"""

import argparse
import json

import torch

from recipes.common.data import ClipData
from recipes.read_a2v.generate import load_run


def probe(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor) -> float:
    """Share of ``y_test``'s events among each clip's top-k scores of a least-squares probe."""
    def design(x):
        return torch.cat([x.reshape(-1, x.shape[-1]), torch.ones(x.shape[0] * x.shape[1], 1)], dim=1)
    w = torch.linalg.lstsq(design(x_train), y_train.reshape(-1, 1)).solution
    scores = (design(x_test) @ w).reshape(y_test.shape)
    hits = sum(int(y[s.topk(int(y.sum())).indices].sum()) for s, y in zip(scores, y_test))
    return hits / int(y_test.sum())


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--train", type=int, default=128)
    parser.add_argument("--clips", type=int, default=64)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cfg, pipe = load_run(args.run_dir)
    data = ClipData(cfg.data)

    def features(batch):
        _, audio, _ = data.model_inputs(batch)
        with torch.no_grad():
            codes = pipe.codec.codes_of_frames(audio)  # n T d
        return codes, audio[:, 0].mean(2), batch["event_frames"].float()  # mel: n T w

    train = torch.utils.data.default_collate([data.dataset[i] for i in range(args.train)])
    codes, mel, events = features(train)
    codes_test, mel_test, events_test = features(data.held_out_batch(args.clips))
    step = (codes_test[:, 1:] - codes_test[:, :-1]).norm(dim=-1)
    onset = events_test[:, 1:].bool()
    result = {"code probe": round(probe(codes, events, codes_test, events_test), 3),
              "log-mel probe": round(probe(mel, events, mel_test, events_test), 3),
              "code change at an onset": round(float(step[onset].mean()), 3),
              "code change elsewhere": round(float(step[~onset].mean()), 3)}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
