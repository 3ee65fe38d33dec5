"""Adapters for a frozen DiT (AV-DiT): every adapter starts as the identity / the frozen model,
LoRA against its formula and its merge round trip, temporal and fusion locality, training
touches only adapters, parameter counts, adapter save/load strictness."""

import pytest
import torch
from einops import rearrange
from hypothesis import given
from hypothesis import strategies as st
from torch import nn
from torch._dynamo.testing import CompileCounter

from avblocks.attention.masks import FrameCausalMask
from avblocks.attention.positional import sincos_1d
from avblocks.dit.adapter_io import (
    adapter_state_dict,
    count_parameters,
    freeze,
    load_adapters,
    save_adapters,
)
from avblocks.dit.adapters import (
    AdaptedDiTBlock,
    AVFusionBlock,
    BottleneckAdapter,
    TemporalAdapter,
    frame_position_embedding,
)
from avblocks.dit.blocks import DiTBlock, STDiTBlock
from avblocks.dit.dit import DiT
from avblocks.dit.lora import LoRALinear, add_lora, lora_disabled, merge_lora, unmerge_lora
from avblocks.saveload import CheckpointError

D, H = 32, 2
TINY = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=D, depth=2, num_heads=H,
            mlp_ratio=2.0, class_dropout_prob=0.1, num_classes=5, learn_sigma=True)


@torch.no_grad()
def _perturb(module: nn.Module, std: float = 0.1) -> nn.Module:
    """Move every parameter off its init (zero adaLN / zero adapters would hide everything)."""
    for p in module.parameters():
        p.add_(torch.randn_like(p) * std)
    return module


def _frozen_dit() -> DiT:
    dit = DiT(**TINY).eval()
    with torch.no_grad():
        for name, p in dit.named_parameters():
            if name != "pos_embed":
                p.add_(torch.randn_like(p) * 0.1)
    return freeze(dit)


# ---- LoRA ----------------------------------------------------------------------------------


def test_lora_linear_is_the_base_at_init_then_follows_its_formula():
    base = nn.Linear(12, 7)
    x = torch.randn(3, 5, 12)
    expected_base = base(x)
    lora = LoRALinear(base, rank=3, alpha=6.0)
    assert lora.weight is base.weight and lora.bias is base.bias  # shared, not copied
    assert not base.weight.requires_grad and not base.bias.requires_grad
    assert set(lora.state_dict()) == {"weight", "bias", "lora_A", "lora_B"}
    assert torch.equal(lora(x), expected_base)
    with torch.no_grad():
        lora.lora_B.normal_(std=0.5)
    # direct formula: W x + b + (alpha / rank) B A x
    delta = (x @ lora.lora_A.T) @ lora.lora_B.T * 2.0
    torch.testing.assert_close(lora(x), expected_base + delta, atol=1e-6, rtol=1e-6)


def test_lora_merge_unmerge_round_trip_and_disabled_path():
    lora = LoRALinear(nn.Linear(16, 24), rank=4, alpha=8.0)
    _perturb(lora)
    x = torch.randn(6, 16)
    w0 = lora.weight.detach().clone()
    before = lora(x)
    with torch.no_grad():
        base_only = x @ w0.T + lora.bias
    merge_lora(lora)
    assert lora.merged and not torch.equal(lora.weight, w0)
    torch.testing.assert_close(lora(x), before, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lora.weight, w0 + lora.delta_weight(), atol=1e-6, rtol=0)
    with lora_disabled(lora):
        torch.testing.assert_close(lora(x), base_only, atol=1e-5, rtol=1e-5)
    merge_lora(lora)  # idempotent
    unmerge_lora(lora)
    assert not lora.merged
    torch.testing.assert_close(lora.weight, w0, atol=1e-6, rtol=0)
    torch.testing.assert_close(lora(x), before, atol=1e-5, rtol=1e-5)
    with lora_disabled(lora):
        torch.testing.assert_close(lora(x), base_only, atol=1e-5, rtol=1e-5)
    assert lora.enabled  # restored


def test_add_lora_on_dit_keeps_its_keys_and_names_what_it_replaced():
    dit = _frozen_dit()
    original_keys = set(dit.state_dict())
    x, t, y = torch.randn(2, 4, 8, 8), torch.tensor([3, 500]), torch.tensor([1, 5])
    before = dit(x, t, y)
    names = add_lora(dit, ["blocks.*.attn.qkv", "blocks.1.mlp.*"], rank=2, alpha=4.0)
    assert names == ["blocks.0.attn.qkv", "blocks.1.attn.qkv", "blocks.1.mlp.fc1",
                     "blocks.1.mlp.fc2"]
    keys = set(dit.state_dict())
    assert original_keys <= keys  # the original checkpoint's keys are unchanged
    assert keys - original_keys == {f"{n}.lora_{ab}" for n in names for ab in "AB"}
    assert torch.equal(dit(x, t, y), before)  # zero B: the frozen model exactly
    qkv_weight = dit.blocks[0].attn.qkv.weight.detach().clone()
    with torch.no_grad():
        for n in names:
            dit.get_submodule(n).lora_B.normal_(std=0.1)
    adapted = dit(x, t, y)
    assert not torch.allclose(adapted, before, atol=1e-3)
    assert merge_lora(dit) == names
    torch.testing.assert_close(dit(x, t, y), adapted, atol=1e-5, rtol=1e-5)
    unmerge_lora(dit)
    torch.testing.assert_close(dit.blocks[0].attn.qkv.weight, qkv_weight, atol=1e-6, rtol=0)
    torch.testing.assert_close(dit(x, t, y), adapted, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=r"\['blocks\.\*\.atn\.qkv'\]"):
        add_lora(dit, ["blocks.*.attn.proj", "blocks.*.atn.qkv"], rank=2, alpha=4.0)
    with pytest.raises(ValueError, match="already wrapped"):
        add_lora(dit, ["blocks.0.attn.qkv"], rank=2, alpha=4.0)


def test_count_parameters_with_lora_on_a_frozen_dit():
    dit = _frozen_dit()
    total = sum(p.numel() for p in dit.parameters())
    assert count_parameters(dit) == (0, total)
    add_lora(dit, ["blocks.*.attn.qkv", "blocks.*.mlp.fc1"], rank=4, alpha=4.0)
    lora = 2 * (4 * (D + 3 * D) + 4 * (D + 2 * D))  # per block: qkv D->3D, fc1 D->2D
    assert count_parameters(dit) == (lora, total + lora)
    shared = nn.Linear(3, 3)
    assert count_parameters(nn.Sequential(shared, shared)) == (12, 12)  # counted once


# ---- bottleneck and temporal adapters ------------------------------------------------------


def test_bottleneck_adapter_identity_at_init_then_its_formula():
    adapter = BottleneckAdapter(hidden_size=D, bottleneck=8)
    x = torch.randn(2, 3, 5, D)
    assert torch.equal(adapter(x), x)
    _perturb(adapter)
    n = nn.functional.layer_norm(x, (D,), adapter.norm.weight, adapter.norm.bias, eps=1e-6)
    h = torch.nn.functional.gelu(n @ adapter.down.weight.T + adapter.down.bias)
    torch.testing.assert_close(adapter(x), x + h @ adapter.up.weight.T + adapter.up.bias)


@pytest.mark.parametrize("positions", ["sincos", "learned", "none"])
def test_temporal_adapter_is_identity_at_init_and_mixes_only_across_frames(positions):
    adapter = TemporalAdapter(hidden_size=D, num_heads=H, frame_positions=positions)
    x = torch.randn(2, 5, 6, D)
    assert torch.equal(adapter(x), x)
    _perturb(adapter)
    out = adapter(x)
    assert not torch.allclose(out, x)
    # token position 4 of frame 2 changes: only position 4 (in every frame) may change
    x2 = x.clone()
    x2[:, 2, 4] += 1.0
    changed = (adapter(x2) - out).abs().amax(dim=(0, 3)) > 0  # t n
    assert changed[:, 4].all() and not changed[:, :4].any() and not changed[:, 5:].any()


def test_temporal_adapter_positions():
    x = torch.randn(1, 4, 3, D)
    perm = torch.tensor([2, 0, 3, 1])
    plain = _perturb(TemporalAdapter(hidden_size=D, num_heads=H, frame_positions="none"))
    # no positions: permutation-equivariant over frames
    torch.testing.assert_close(plain(x[:, perm]), plain(x)[:, perm], atol=1e-6, rtol=1e-6)
    coded = _perturb(TemporalAdapter(hidden_size=D, num_heads=H))
    assert not torch.allclose(coded(x[:, perm]), coded(x)[:, perm], atol=1e-4)
    torch.testing.assert_close(frame_position_embedding(torch.arange(7.0), D), sincos_1d(D, 7))
    learned = TemporalAdapter(hidden_size=D, num_heads=H, frame_positions="learned", max_frames=3)
    with pytest.raises(ValueError, match=r"max_frames \(3\)"):
        learned(x)
    with pytest.raises(ValueError, match="frame_positions"):
        TemporalAdapter(hidden_size=D, num_heads=H, frame_positions="rope")


def test_temporal_adapter_causal_mask_hides_later_frames():
    adapter = _perturb(TemporalAdapter(hidden_size=D, num_heads=H))
    x = torch.randn(2, 5, 3, D)
    mask = FrameCausalMask(5, 1)
    out = adapter(x, mask=mask)
    x2 = x.clone()
    x2[:, 3:] = torch.randn_like(x2[:, 3:])
    torch.testing.assert_close(adapter(x2, mask=mask)[:, :3], out[:, :3])


# ---- the adapted block -------------------------------------------------------------------------


def _block() -> DiTBlock:
    return freeze(_perturb(DiTBlock(hidden_size=D, num_heads=H, mlp_ratio=2.0)))


@given(frames=st.integers(1, 4), per_frame_c=st.booleans())
def test_adapted_block_with_fresh_adapters_equals_block_on_every_frame(frames, per_frame_c):
    block = _block()
    adapted = AdaptedDiTBlock(block, temporal=TemporalAdapter(hidden_size=D, num_heads=H),
                              bottleneck=BottleneckAdapter(hidden_size=D, bottleneck=8))
    x = torch.randn(2, frames, 6, D)
    c = torch.randn(2, frames, D) if per_frame_c else torch.randn(2, D)
    out = adapted(x, c)
    for k in range(frames):
        expected = block(x[:, k], c[:, k] if per_frame_c else c)
        torch.testing.assert_close(out[:, k], expected, atol=1e-6, rtol=1e-6)


def test_adapted_block_places_temporal_after_attention_and_bottleneck_last():
    block = _block()
    temporal = _perturb(TemporalAdapter(hidden_size=D, num_heads=H))
    bottleneck = _perturb(BottleneckAdapter(hidden_size=D, bottleneck=8))
    adapted = AdaptedDiTBlock(block, temporal=temporal, bottleneck=bottleneck)
    x, c = torch.randn(2, 3, 5, D), torch.randn(2, D)
    # reference composition from the block's own pieces, written per frame
    ada = block.adaLN_modulation[1]
    s1, g1, a1, s2, g2, a2 = ada(torch.nn.functional.silu(c)).chunk(6, dim=-1)
    frames = []
    for k in range(3):
        h = block.norm1(x[:, k]) * (1 + g1[:, None]) + s1[:, None]
        frames.append(x[:, k] + a1[:, None] * block.attn(h))
    h = temporal(torch.stack(frames, dim=1))
    h = h + a2[:, None, None] * block.mlp(block.norm2(h) * (1 + g2[:, None, None])
                                          + s2[:, None, None])
    torch.testing.assert_close(adapted(x, c), bottleneck(h), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=r"width \(16\)"):
        AdaptedDiTBlock(block, bottleneck=BottleneckAdapter(hidden_size=16))
    with pytest.raises(TypeError, match="STDiTBlock"):
        AdaptedDiTBlock(STDiTBlock(hidden_size=D, num_heads=H))


# ---- fusion ----------------------------------------------------------------------------------


def test_fusion_block_identity_at_init_and_bidirectional_after():
    fusion = AVFusionBlock(hidden_size=D, num_heads=H)
    video, audio = torch.randn(2, 4, 6, D), torch.randn(2, 2, 5, D)
    v, a = fusion(video, audio)
    assert torch.equal(v, video) and torch.equal(a, audio)
    _perturb(fusion)
    v, a = fusion(video, audio)
    # each stream changes only through the other one: the same video with other audio
    v2, a2 = fusion(video, audio + torch.randn_like(audio))
    assert not torch.allclose(v2, v, atol=1e-4)
    v3, a3 = fusion(video + torch.randn_like(video), audio)
    assert not torch.allclose(a3, a, atol=1e-4)
    # and the residual is read from the inputs: zeroing the out-projections restores them
    with torch.no_grad():
        for lin in (fusion.cross.video_from_audio.to_out, fusion.cross.audio_from_video.to_out):
            lin.weight.zero_()
            lin.bias.zero_()
    v, a = fusion(video, audio)
    assert torch.equal(v, video) and torch.equal(a, audio)


def test_fusion_frame_codes_share_one_clip_time_axis():
    fusion = AVFusionBlock(hidden_size=D, num_heads=H)
    video = torch.zeros(1, 4, 1, D)
    # video frames sit at 0..3; 8 audio frames of the same clip sit at half-frame steps
    torch.testing.assert_close(fusion._codes(4, 4, video), sincos_1d(D, 4))
    centres = (torch.arange(8, dtype=torch.float64) + 0.5) / 2 - 0.5
    torch.testing.assert_close(fusion._codes(8, 4, video), frame_position_embedding(centres, D))


def test_frame_local_fusion_times_follow_the_image_columns():
    # 2 audio frames of 6 tokens in rows of 3 columns, for 6 video frames: column c of audio
    # frame j is video frame 3j + c (hand-computed: (j + (c + 0.5) / 3) * 3 - 0.5)
    fusion = AVFusionBlock(hidden_size=D, num_heads=H, audio_columns=3)
    expected = torch.tensor([[0.0, 1, 2, 0, 1, 2], [3, 4, 5, 3, 4, 5]], dtype=torch.float64)
    torch.testing.assert_close(fusion.audio_token_times(2, 6, 6), expected)
    # 4 columns per 2 video frames: half-frame steps, centred on the frames' own centres
    half = AVFusionBlock(hidden_size=D, num_heads=H, audio_columns=4)
    torch.testing.assert_close(half.audio_token_times(1, 4, 2)[0],
                               torch.tensor([-0.25, 0.25, 0.75, 1.25], dtype=torch.float64))
    with pytest.raises(ValueError, match="no audio tokens"):
        fusion.audio_token_times(1, 6, 6)
    with pytest.raises(ValueError, match="whole number of rows"):
        fusion.audio_token_times(2, 5, 6)
    with pytest.raises(ValueError, match="audio_columns"):
        AVFusionBlock(hidden_size=D, num_heads=H, audio_columns=-1)


def test_frame_local_fusion_pairs_each_frame_with_its_own_sound_only():
    fusion = _perturb(AVFusionBlock(hidden_size=D, num_heads=H, audio_columns=3), std=0.3)
    video, audio = torch.randn(1, 6, 4, D), torch.randn(1, 2, 6, D)
    v, a = fusion(video, audio)
    # the sound of video frame 4: audio frame 1, column 1 (tokens 1 and 4 of that frame)
    louder = audio.clone()
    louder[0, 1, [1, 4]] += torch.randn(2, D)  # (a constant would vanish in the LayerNorm)
    v2, _ = fusion(video, louder)
    changed = (v2 - v).abs().amax(dim=(0, 2, 3))
    assert changed[4] > 1e-4 and torch.all(changed[[0, 1, 2, 3, 5]] == 0)
    # and frame 2's picture reaches only the tokens of column 2 of audio frame 0
    moved = video.clone()
    moved[0, 2] += torch.randn(4, D)
    _, a2 = fusion(moved, audio)
    touched = ((a2 - a).abs().amax(dim=-1) > 0)[0]
    expected = torch.zeros(2, 6, dtype=torch.bool)
    expected[0, [2, 5]] = True
    assert torch.equal(touched, expected)
    # global fusion (the default) lets the same change reach every audio token
    wide = AVFusionBlock(hidden_size=D, num_heads=H)
    wide.load_state_dict(fusion.state_dict())
    _, a3 = wide(video, audio)
    _, a4 = wide(moved, audio)
    assert bool(((a4 - a3).abs().amax(dim=-1) > 0).all())


# ---- the whole adapted model: init equivalence, training touches only adapters ---------------


def _video_forward(dit: DiT, blocks: nn.ModuleList, x, t, y):
    """DiT's forward on every frame of ``b c t h w``, with adapted blocks (b t n d)."""
    frames = x.shape[2]
    tokens = rearrange(dit.embed(rearrange(x, "b c t h w -> (b t) c h w")),
                       "(b t) n d -> b t n d", t=frames)
    c = dit.condition(t, y)
    for block in blocks:
        tokens = block(tokens, c)
    out = dit.final_layer(tokens, c)
    return rearrange(dit.unpatchify(rearrange(out, "b t n p -> (b t) n p")),
                     "(b t) c h w -> b c t h w", t=frames)


def _adapted_model():
    dit = _frozen_dit()
    video_blocks = nn.ModuleList(
        AdaptedDiTBlock(b, temporal=TemporalAdapter(hidden_size=D, num_heads=H))
        for b in dit.blocks)
    add_lora(dit, ["blocks.*.attn.qkv", "blocks.*.attn.proj"], rank=2, alpha=2.0)
    fusion = AVFusionBlock(hidden_size=D, num_heads=H)
    return nn.ModuleDict(dict(dit=dit, video_blocks=video_blocks, fusion=fusion))


def test_adapted_model_at_init_equals_frozen_dit_on_every_frame():
    model = _adapted_model()
    dit = model["dit"]
    x = torch.randn(2, 4, 3, 8, 8)
    t, y = torch.tensor([10, 700]), torch.tensor([2, 5])
    out = _video_forward(dit, model["video_blocks"], x, t, y)
    for k in range(3):
        torch.testing.assert_close(out[:, :, k], dit(x[:, :, k], t, y), atol=1e-5, rtol=1e-5)


def test_training_changes_only_adapters():
    model = _adapted_model()
    dit, video_blocks, fusion = model["dit"], model["video_blocks"], model["fusion"]
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    adapters = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert frozen and adapters
    assert all("lora_" in n or "temporal" in n or "fusion" in n for n in adapters)
    # no weight decay: an adapter may only change through its gradient
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    x, audio = torch.randn(2, 4, 3, 8, 8), torch.randn(2, 4, 8, 8)
    t, y = torch.tensor([10, 700]), torch.tensor([2, 5])
    for _ in range(4):
        with lora_disabled(dit):  # video branch: frozen weights + temporal adapters
            v = _video_forward(dit, video_blocks, x, t, y)
        a = dit(audio, t, y)  # audio branch: LoRA
        fv, fa = fusion(rearrange(v, "b c t h w -> b t (h w) c")[..., :4].repeat(1, 1, 1, 8),
                        rearrange(a, "b c h w -> b 1 (h w) c")[..., :4].repeat(1, 1, 1, 8))
        loss = (v - 1).square().mean() + (a - 1).square().mean() + (fv + fa.mean()).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n  # bit-identical
            assert p.grad is None
        else:
            assert not torch.equal(p, adapters[n]), f"adapter {n} did not train"


# ---- adapter weights on disk --------------------------------------------------------------------


def test_adapter_save_load_round_trip(tmp_path):
    model = _adapted_model()
    _perturb(nn.ParameterList(p for p in model.parameters() if p.requires_grad))
    state = adapter_state_dict(model)
    assert set(state) == {n for n, p in model.named_parameters() if p.requires_grad}
    path = save_adapters(model, tmp_path / "adapters.safetensors")
    assert [p.name for p in tmp_path.iterdir()] == ["adapters.safetensors"]  # no temp left
    torch.manual_seed(1)
    again = _adapted_model()
    with torch.no_grad():  # the same frozen backbone (in practice: the same DiT checkpoint)
        own = dict(again.named_parameters())
        for n, p in model.named_parameters():
            if not p.requires_grad:
                own[n].copy_(p)
    assert not all(torch.equal(v, state[k]) for k, v in adapter_state_dict(again).items())
    load_adapters(again, path)
    for name, tensor in adapter_state_dict(again).items():
        assert torch.equal(tensor, state[name]), name
    x = torch.randn(1, 4, 2, 8, 8)
    t, y = torch.tensor([5]), torch.tensor([0])
    assert torch.equal(again["dit"](x[:, :, 0], t, y), model["dit"](x[:, :, 0], t, y))
    assert torch.equal(_video_forward(again["dit"], again["video_blocks"], x, t, y),
                       _video_forward(model["dit"], model["video_blocks"], x, t, y))


def test_adapter_loading_is_strict_and_names_keys(tmp_path):
    model = _adapted_model()
    path = save_adapters(model, tmp_path / "a.safetensors")
    more = _adapted_model()
    more["extra"] = BottleneckAdapter(hidden_size=D, bottleneck=4)
    with pytest.raises(CheckpointError, match=r"missing adapter keys \['extra\.down\.bias'"):
        load_adapters(more, path)
    fewer = _adapted_model()
    freeze(fewer["fusion"])
    with pytest.raises(CheckpointError,
                       match=r"unexpected keys \['fusion\.cross\.audio_from_video\.to_k\.bias'"):
        load_adapters(fewer, path)
    other_rank = _adapted_model()
    other_rank["dit"] = _frozen_dit()
    add_lora(other_rank["dit"], ["blocks.*.attn.qkv", "blocks.*.attn.proj"], rank=3, alpha=2.0)
    with pytest.raises(CheckpointError, match=r"dit\.blocks\.0\.attn\.proj\.lora_A: saved \(2, 32\)"):
        load_adapters(other_rank, path)
    with pytest.raises(ValueError, match="no trainable parameters"):
        save_adapters(freeze(DiT(**TINY)), tmp_path / "none.safetensors")


def test_adapted_block_and_lora_compile_fullgraph():
    torch._dynamo.reset()
    block = _block()
    add_lora(block, ["attn.qkv"], rank=2, alpha=2.0)
    _perturb(nn.ParameterList(p for p in block.parameters() if p.requires_grad))
    adapted = AdaptedDiTBlock(block, temporal=_perturb(TemporalAdapter(hidden_size=D,
                                                                       num_heads=H)))
    counter = CompileCounter()
    compiled = torch.compile(adapted, backend=counter, fullgraph=True)
    x, c = torch.randn(2, 3, 5, D), torch.randn(2, 3, D)
    with torch.no_grad():
        first = compiled(x, c)
        compiled(torch.randn_like(x), c)
        eager = adapted(x, c)
    assert counter.frame_count == 1
    torch.testing.assert_close(first, eager, rtol=1e-5, atol=1e-5)
