"""Plain-math references of every coupling, from each module's weights and documented rule.

:func:`reference_couple` recomputes a coupling's output in float64, one clip and one head at a
time, with explicit formulas: LayerNorm and RMSNorm written out, rotary positions as the
rotation of each channel pair by ``seconds * scale * base^(-2i/d)``, an explicit boolean
visibility matrix built from the token times (window, group, block or shift rule, as each
coupling documents it) and a softmax over the visible keys. It calls none of the modules'
forward code (no ``attend``, no masks, no folding): a coupling that folds, masks or rotates
differently from its documentation disagrees with it. Slow (Python loops): for tests.
"""

import math

import torch
from torch import Tensor, nn

from avblocks.attention.projections import MultiHeadAttention
from avblocks.attention.time_rope import TimeRotary
from avblocks.coupling.adapters import BiBlockCoupling, GCMCoupling, RandomShiftCoupling
from avblocks.coupling.base import Coupling, StreamGate
from avblocks.coupling.cross import GatedCrossAttention
from avblocks.coupling.joint import JointAttention
from avblocks.coupling.resample import ResampledAddition

__all__ = ["reference_couple", "rotate_pairs", "layer_norm"]


def _d(x: Tensor) -> Tensor:
    return x.detach().to(torch.float64)


def layer_norm(x: Tensor, norm: nn.LayerNorm) -> Tensor:
    """``(x - mean) / sqrt(var + eps)`` over the last axis, then the affine part if any."""
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    y = (x - mean) / torch.sqrt(var + norm.eps)
    if norm.weight is not None:
        y = y * _d(norm.weight) + _d(norm.bias)
    return y


def _rms(x: Tensor, norm: nn.Module) -> Tensor:
    if isinstance(norm, nn.Identity):
        return x
    eps = norm.eps if norm.eps is not None else torch.finfo(torch.float32).eps
    return x / torch.sqrt((x**2).mean(-1, keepdim=True) + eps) * _d(norm.weight)


def _linear(x: Tensor, linear: nn.Linear) -> Tensor:
    y = x @ _d(linear.weight).T
    return y if linear.bias is None else y + _d(linear.bias)


def rotate_pairs(x: Tensor, seconds: Tensor, rotary: TimeRotary | None) -> Tensor:
    """Rotate channel pairs ``(2i, 2i+1)`` of ``x`` (``n h d``) by ``seconds * scale * base^(-2i/d)``."""
    if rotary is None:
        return x
    d = x.shape[-1]
    out = torch.empty_like(x)
    for i in range(d // 2):
        angle = _d(seconds) * rotary.scale * rotary.base ** (-2 * i / d)
        c, s = torch.cos(angle)[:, None], torch.sin(angle)[:, None]
        even, odd = x[..., 2 * i], x[..., 2 * i + 1]
        out[..., 2 * i], out[..., 2 * i + 1] = even * c - odd * s, even * s + odd * c
    return out


def _gate(gate: StreamGate, cond: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """(shift, scale, gate) vectors of one clip."""
    if not gate.conditioned:
        zero = torch.zeros((), dtype=torch.float64)
        return zero, zero, _d(gate.gate)
    c = _d(cond)
    h = _linear(c * torch.sigmoid(c), gate.ada[1])
    return tuple(h.chunk(3, dim=-1))


def _attention(q: Tensor, k: Tensor, v: Tensor, allowed: Tensor) -> Tensor:
    """``q`` nq h d, ``k`` / ``v`` nk h d -> nq h d; each head a masked softmax."""
    out = torch.empty(q.shape[0], q.shape[1], v.shape[-1], dtype=torch.float64)
    for h in range(q.shape[1]):
        scores = q[:, h] @ k[:, h].T / math.sqrt(q.shape[-1])
        scores = scores.masked_fill(~allowed, float("-inf"))
        out[:, h] = torch.softmax(scores, dim=-1) @ v[:, h]
    return out


def _project(mha: MultiHeadAttention, x: Tensor, context: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Queries of ``x`` and keys / values of ``context`` of one clip, ``n h d``, qk-normed."""
    h, d = mha.heads, mha.head_dim
    q = _rms(_linear(x, mha.to_q).view(-1, h, d), mha.q_norm)
    k = _rms(_linear(context, mha.to_k).view(-1, mha.kv_heads, d), mha.k_norm)
    v = _linear(context, mha.to_v).view(-1, mha.kv_heads, d)
    groups = h // mha.kv_heads
    return q, k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)


def _window(tq: Tensor, tk: Tensor, window: float | None) -> Tensor:
    if window is None:
        return torch.ones(len(tq), len(tk), dtype=torch.bool)
    return (_d(tq)[:, None] - _d(tk)[None, :]).abs() <= window


def _cross(m: GatedCrossAttention, video, audio, vt, at, vc, ac):
    vs, vsc, vg = _gate(m.video_gate, vc)
    as_, asc, ag = _gate(m.audio_gate, ac)
    v = layer_norm(video, m.video_norm) * (1 + vsc) + vs
    a = layer_norm(audio, m.audio_norm) * (1 + asc) + as_

    def one(mha, x, tx, ctx, tc):
        q, k, val = _project(mha, x, ctx)
        o = _attention(rotate_pairs(q, tx, m.rotary), rotate_pairs(k, tc, m.rotary), val,
                       _window(tx, tc, m.window))
        return _linear(o.reshape(len(x), -1), mha.to_out)

    return video + vg * one(m.video_from_audio, v, vt, a, at), audio + ag * one(m.audio_from_video, a, at, v, vt)


def _joint(m: JointAttention, video, audio, vt, at, vc, ac):
    sides = []
    for side, x, t, c in ((m.video, video, vt, vc), (m.audio, audio, at, ac)):
        shift, scale, gate = _gate(side.attn_gate, c)
        q, k, v = _project(side.attn, layer_norm(x, side.norm1) * (1 + scale) + shift,
                           layer_norm(x, side.norm1) * (1 + scale) + shift)
        sides.append((rotate_pairs(q, t, m.rotary), rotate_pairs(k, t, m.rotary), v, gate))
    times = torch.cat([vt, at])
    o = _attention(torch.cat([sides[0][0], sides[1][0]]), torch.cat([sides[0][1], sides[1][1]]),
                   torch.cat([sides[0][2], sides[1][2]]), _window(times, times, m.window))
    outs = []
    for (side, x, c), o_s, (_, _, _, gate) in zip(((m.video, video, vc), (m.audio, audio, ac)),
                                                   (o[: len(video)], o[len(video):]), sides):
        x = x + gate * _linear(o_s.reshape(len(x), -1), side.attn.to_out)
        shift, scale, gate2 = _gate(side.mlp_gate, c)
        hidden = _linear(layer_norm(x, side.norm2) * (1 + scale) + shift, side.mlp.fc1)
        hidden = 0.5 * hidden * (1 + torch.tanh(math.sqrt(2 / math.pi) * (hidden + 0.044715 * hidden**3)))
        outs.append(x + gate2 * _linear(hidden, side.mlp.fc2))
    return tuple(outs)


def _resample(m: ResampledAddition, video, audio, vt, at, vc, ac):
    vs, vsc, vg = _gate(m.video_gate, vc)
    as_, asc, ag = _gate(m.audio_gate, ac)
    v = layer_norm(video, m.video_norm) * (1 + vsc) + vs
    a = layer_norm(audio, m.audio_norm) * (1 + asc) + as_
    window = m.window_for(vt, at)

    def mean_within(dst_t, src_t, src):
        out = torch.empty(len(dst_t), src.shape[-1], dtype=torch.float64)
        for i, t in enumerate(_d(dst_t)):
            near = (_d(src_t) - t).abs() <= window
            out[i] = src[near].mean(dim=0)
        return out

    return (video + vg * _linear(mean_within(vt, at, a), m.video_from_audio),
            audio + ag * _linear(mean_within(at, vt, v), m.audio_from_video))


def _frame_index(times: Tensor) -> Tensor:
    """Frame of every token: the rank of its time among the stream's distinct times."""
    return torch.unique(_d(times), return_inverse=True)[1]


def _bidirectional(cross, video, audio, allowed: Tensor):
    """:class:`BidirectionalCrossAttention` of one clip with an explicit ``nv x na`` visibility."""
    v, a = layer_norm(video, cross.video_norm), layer_norm(audio, cross.audio_norm)

    def one(mha, x, ctx, ok):
        q, k, val = _project(mha, x, ctx)
        return _linear(_attention(q, k, val, ok).reshape(len(x), -1), mha.to_out)

    return video + one(cross.video_from_audio, v, a, allowed), audio + one(cross.audio_from_video, a, v, allowed.T)


def _video_frames_of_audio(vt: Tensor, at: Tensor) -> Tensor:
    """The video frame each audio token belongs to: the nearest video frame time."""
    frame_times = torch.unique(_d(vt))
    return (_d(at)[:, None] - frame_times[None, :]).abs().argmin(dim=1)


def _gcm(m: GCMCoupling, video, audio, vt, at, vc, ac):
    fv, fa = _frame_index(vt), _video_frames_of_audio(vt, at)
    per_group = len(torch.unique(vt)) // m.block.groups
    allowed = (fv[:, None] // per_group) == (fa[None, :] // per_group)
    return _bidirectional(m.block.cross, video, audio, allowed)


def _biblock(m: BiBlockCoupling, video, audio, vt, at, vc, ac):
    fv, fa = _frame_index(vt), _video_frames_of_audio(vt, at)
    bt = m.block.block_frames
    allowed = ((fv[:, None] // bt) - (fa[None, :] // bt)).abs() <= m.block.halo
    return _bidirectional(m.block.cross, video, audio, allowed)


def _random_shift(m: RandomShiftCoupling, video, audio, vt, at, vc, ac):
    fv, fa = _frame_index(vt), _frame_index(at)
    nv, na = int(fv.max()) + 1, int(fa.max()) + 1
    start = fv[:, None] * na // nv + m.last_shift
    allowed = (fa[None, :] - start) % na < m.window
    return _bidirectional(m.cross, video, audio, allowed)


_RULES = {
    GatedCrossAttention: _cross,
    JointAttention: _joint,
    ResampledAddition: _resample,
    GCMCoupling: _gcm,
    BiBlockCoupling: _biblock,
    RandomShiftCoupling: _random_shift,
}


@torch.no_grad()
def reference_couple(coupling: Coupling, video: Tensor, audio: Tensor, video_time: Tensor,
                     audio_time: Tensor, video_cond: Tensor | None = None,
                     audio_cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """What ``coupling(video, audio, ...)`` should return, in float64 (module doc).

    :class:`RandomShiftCoupling` is referenced at its ``last_shift``.
    """
    rule = _RULES.get(type(coupling))
    if rule is None:
        raise ValueError(f"no reference for {type(coupling).__name__}")
    outs_v, outs_a = [], []
    for i in range(video.shape[0]):
        vc = None if video_cond is None else video_cond[i]
        ac = None if audio_cond is None else audio_cond[i]
        v, a = rule(coupling, _d(video[i]), _d(audio[i]), video_time, audio_time, vc, ac)
        outs_v.append(v)
        outs_a.append(a)
    return torch.stack(outs_v), torch.stack(outs_a)
