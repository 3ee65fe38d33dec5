"""A step cache for two-stream models that decides per stream and reuses coupling outputs.

The step caches of :mod:`avblocks.dit.cache` decide once per call for the whole model. In a
two-stream model the streams move at different speeds along the sampling path (audio
latents settle earlier or later than video; in audio-to-video the audio never moves at all),
and the couplings between them are a large share of the work. :class:`StreamCache` wraps
:meth:`~avblocks.dit.dual_stream.DualStreamDiT.forward_blocks` and, on every call:

1. **per stream** (TeaCache's rule, one accumulator per stream): the relative L1 change of
   the stream's first-block modulated input ``norm1(x) * (1 + scale) + shift`` against the
   previous call is added to the stream's accumulator; while it stays under the stream's
   threshold (``video_threshold`` / ``audio_threshold``) the stream's blocks are skipped and
   its output is its input plus the stack residual of its last computed call; otherwise the
   stream runs and its accumulator resets;
2. **per coupling** (when at least one stream runs): the coupling's input is the running
   streams' current tokens and, for a skipped stream, its tokens at that coupling in the last
   call that ran the coupling. When the running streams' input moved by less than ``coupling_threshold``
   (relative L1, against the last call that computed this coupling) the coupling's output
   increments from that call are added again; otherwise the coupling runs and is cached.

Choices shared with :mod:`avblocks.dit.cache`: one decision per call for the whole batch,
``warmup`` calls computed after each reset, a change of shape recomputes, gradients enabled
means no caching, and thresholds of 0 never skip: the output is then the uncached one bit for
bit (a computed coupling's output is used as it is, not re-added as an increment).
``StreamCache.streams`` counts, per stream and for the couplings, what was computed and
skipped, with every call's measured change.
"""

import torch
from torch import Tensor, nn

from avblocks.dit.cache import CacheStats, StepCache, relative_l1
from avblocks.dit.modulation import modulate, to_tokens

__all__ = ["StreamCache"]

STREAMS = ("video", "audio")


class StreamCache(StepCache):
    """Per-stream step cache of a :class:`~avblocks.dit.dual_stream.DualStreamDiT` (module doc).

    Args:
        model: the two-stream model (``blocks`` of ``DualStreamBlock``, ``forward_blocks``).
        video_threshold, audio_threshold: accumulated change under which a stream is skipped
            (0: never).
        coupling_threshold: input change under which a coupling's output is reused (0: never).
        warmup: calls always computed after a reset.
    """

    def __init__(self, model: nn.Module, *, video_threshold: float, audio_threshold: float,
                 coupling_threshold: float = 0.0, warmup: int = 1) -> None:
        for name, value in (("video_threshold", video_threshold), ("audio_threshold", audio_threshold),
                            ("coupling_threshold", coupling_threshold)):
            if not value >= 0:
                raise ValueError(f"{name} ({value}) must be >= 0 (0 never skips)")
        block = getattr(model, "blocks", [None])[0]
        if not all(hasattr(block, part) for part in ("video", "audio", "coupling", "streams")):
            raise ValueError(f"{type(model).__name__} is not a two-stream model: StreamCache needs blocks "
                             "with video, audio and coupling parts (DualStreamDiT)")
        self.thresholds = {"video": float(video_threshold), "audio": float(audio_threshold)}
        self.coupling_threshold = float(coupling_threshold)
        super().__init__(model, threshold=max(video_threshold, audio_threshold), warmup=warmup)
        self.reset()

    def reset(self) -> None:
        super().reset()
        self.streams = {name: CacheStats() for name in (*STREAMS, "coupling")}
        self._accumulated = dict.fromkeys(STREAMS, 0.0)

    def __repr__(self) -> str:
        return (f"StreamCache(thresholds={self.thresholds}, coupling_threshold={self.coupling_threshold}, "
                f"video: {self.streams['video']}; audio: {self.streams['audio']}; "
                f"couplings: {self.streams['coupling']})")

    # ---- decisions ----------------------------------------------------------------------------
    def _modulated(self, name: str, tokens: Tensor, c: Tensor) -> Tensor:
        block = getattr(self.model.blocks[0], name)
        shift, scale = block.adaLN_modulation(c)[:2]
        return modulate(block.norm1(tokens), to_tokens(shift, tokens), to_tokens(scale, tokens))

    def _skip(self, name: str, tokens: Tensor, c: Tensor, fresh: bool) -> bool:
        modulated = self._modulated(name, tokens, c)
        previous = self._state.get(f"{name}_modulated")
        change = float("nan") if previous is None else relative_l1(modulated, previous)
        stats = self.streams[name]
        stats.changes.append(change)
        self._state[f"{name}_modulated"] = modulated
        if not fresh and previous is not None and f"{name}_residual" in self._state:
            self._accumulated[name] += change
            if self._accumulated[name] < self.thresholds[name]:
                stats.skipped += 1
                return True
        self._accumulated[name] = 0.0
        stats.computed += 1
        return False

    # ---- the wrapped method -------------------------------------------------------------------
    def _forward_blocks(self, video: Tensor, audio: Tensor, c_video: Tensor, c_audio: Tensor
                        ) -> tuple[Tensor, Tensor]:
        if torch.is_grad_enabled() and any(x.requires_grad for x in (video, audio, c_video, c_audio)):
            return self._original(video, audio, c_video, c_audio)
        shapes = tuple((tuple(x.shape), x.dtype, x.device) for x in (video, audio, c_video, c_audio))
        fresh = shapes != self._shapes or self.stats.calls < self.warmup
        if shapes != self._shapes:
            self._state, self._shapes = {}, shapes
        inputs = {"video": video, "audio": audio}
        conds = {"video": c_video, "audio": c_audio}
        skip = {name: self._skip(name, inputs[name], conds[name], fresh) for name in STREAMS}
        if all(skip.values()):
            self.stats.skipped += 1
            return tuple(inputs[n] + self._state[f"{n}_residual"] for n in STREAMS)
        self.stats.computed += 1
        out = self._run_blocks(dict(inputs), conds, skip)
        for name in STREAMS:
            if skip[name]:
                out[name] = inputs[name] + self._state[f"{name}_residual"]
            else:
                self._state[f"{name}_residual"] = out[name] - inputs[name]
        return out["video"], out["audio"]

    def _run_blocks(self, x: dict[str, Tensor], conds: dict[str, Tensor], skip: dict[str, bool]
                    ) -> dict[str, Tensor]:
        model = self.model
        times = {"video": model.video_time, "audio": model.audio_time}
        for i, block in enumerate(model.blocks):
            for name in STREAMS:
                if not skip[name]:
                    x[name] = getattr(block, name)(x[name], conds[name], times[name], model.rotary)
            if block.coupling is None:
                continue
            cached_in = self._state.get(f"coupling{i}_in")
            coupled = {n: (cached_in[n] if skip[n] else x[n]) for n in STREAMS}
            running = [n for n in STREAMS if not skip[n]]
            change = (float("nan") if cached_in is None
                      else max(relative_l1(coupled[n], cached_in[n]) for n in running))
            stats = self.streams["coupling"]
            stats.changes.append(change)
            if cached_in is not None and change < self.coupling_threshold:
                stats.skipped += 1
                delta = self._state[f"coupling{i}_delta"]
                for n in running:
                    x[n] = x[n] + delta[n]
                continue
            stats.computed += 1
            v, a = block.couple(coupled["video"], coupled["audio"], conds["video"], conds["audio"],
                                times["video"], times["audio"])
            result = {"video": v, "audio": a}
            self._state[f"coupling{i}_in"] = coupled
            self._state[f"coupling{i}_delta"] = {n: result[n] - coupled[n] for n in STREAMS}
            for n in running:
                x[n] = result[n]
        return x
