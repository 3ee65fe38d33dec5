"""DiTBlock / STDiTBlock / FinalLayer / patch helpers against plain-torch references.

References are written here from the formulas (DiT paper and facebookresearch/DiT's
``models.py``), not by calling the blocks' own sub-modules.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from jaxtyping import TypeCheckError
from torch._dynamo.testing import CompileCounter

from avblocks.attention.dispatch import attention_backend
from avblocks.attention.masks import FrameCausalMask
from avblocks.dit.blocks import DiTBlock, FinalLayer, STDiTBlock
from avblocks.dit.patch import (
    PatchEmbed2d,
    PatchEmbed3d,
    patchify2d,
    patchify3d,
    unpatchify2d,
    unpatchify3d,
)
from avblocks.typing import TYPECHECK

D, HEADS = 32, 4


def _perturb(module: torch.nn.Module, std: float = 0.2) -> torch.nn.Module:
    """Random weights everywhere (incl. the zero-initialised adaLN), so nothing is trivially 0."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(std=std)
    return module


# ---- plain-torch references ------------------------------------------------------------


def _ln(x):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + 1e-6)


def _gelu_tanh(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def _attention(x, sd, prefix, heads, causal=False):
    """x: (..., n, d); timm layout: qkv output split as (3, heads, head_dim)."""
    *lead, n, d = x.shape
    e = d // heads
    qkv = x @ sd[f"{prefix}.qkv.weight"].T + sd[f"{prefix}.qkv.bias"]
    qkv = qkv.reshape(*lead, n, 3, heads, e)
    q, k, v = (qkv[..., i, :, :].transpose(-3, -2) for i in range(3))  # (..., heads, n, e)
    scores = q @ k.transpose(-2, -1) / math.sqrt(e)
    if causal:
        scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    out = torch.softmax(scores, dim=-1) @ v
    out = out.transpose(-3, -2).reshape(*lead, n, d)
    return out @ sd[f"{prefix}.proj.weight"].T + sd[f"{prefix}.proj.bias"]


def _mlp(x, sd):
    h = _gelu_tanh(x @ sd["mlp.fc1.weight"].T + sd["mlp.fc1.bias"])
    return h @ sd["mlp.fc2.weight"].T + sd["mlp.fc2.bias"]


def _ada(c, sd, k, prefix="adaLN_modulation.1"):
    return (F.silu(c) @ sd[f"{prefix}.weight"].T + sd[f"{prefix}.bias"]).chunk(k, dim=-1)


def _reference_dit(x, c, sd, heads):
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (
        v[:, None] for v in _ada(c, sd, 6)
    )
    x = x + gate_msa * _attention(_ln(x) * (1 + scale_msa) + shift_msa, sd, "attn", heads)
    return x + gate_mlp * _mlp(_ln(x) * (1 + scale_mlp) + shift_mlp, sd)


def _reference_stdit(x, c, sd, heads, causal=False):
    """x: b t n d, c: b t d. Spatial, then temporal, then MLP; 9 vectors in documented order."""
    v = [m[:, :, None] for m in _ada(c, sd, 9)]  # b t 1 d
    h = _attention(_ln(x) * (1 + v[1]) + v[0], sd, "attn", heads)  # attention over n
    x = x + v[2] * h
    h = _ln(x) * (1 + v[7]) + v[6]
    h = _attention(h.transpose(1, 2), sd, "attn_temporal", heads, causal).transpose(1, 2)
    x = x + v[8] * h
    return x + v[5] * _mlp(_ln(x) * (1 + v[4]) + v[3], sd)


# ---- DiTBlock ----------------------------------------------------------------------------


def test_dit_block_keys_and_shapes_are_dits():
    block = DiTBlock(hidden_size=48, num_heads=6, mlp_ratio=4.0)
    shapes = {k: tuple(v.shape) for k, v in block.state_dict().items()}
    assert shapes == {
        "attn.qkv.weight": (144, 48),
        "attn.qkv.bias": (144,),
        "attn.proj.weight": (48, 48),
        "attn.proj.bias": (48,),
        "mlp.fc1.weight": (192, 48),
        "mlp.fc1.bias": (192,),
        "mlp.fc2.weight": (48, 192),
        "mlp.fc2.bias": (48,),
        "adaLN_modulation.1.weight": (288, 48),
        "adaLN_modulation.1.bias": (288,),
    }
    assert isinstance(block.adaLN_modulation[0], torch.nn.SiLU)
    for norm in (block.norm1, block.norm2):
        assert not norm.elementwise_affine and norm.eps == 1e-6


def test_dit_block_init_xavier_and_zero_adaln():
    block = DiTBlock(hidden_size=64, num_heads=4)
    fan_in, fan_out = 64, 192
    bound = math.sqrt(6 / (fan_in + fan_out))
    w = block.attn.qkv.weight
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound
    assert torch.all(block.attn.qkv.bias == 0)
    assert torch.all(block.adaLN_modulation[1].weight == 0)
    assert torch.all(block.adaLN_modulation[1].bias == 0)


@pytest.mark.parametrize("backend", ["math", "sdpa"])
def test_dit_block_matches_reference_formula(backend):
    block = _perturb(DiTBlock(hidden_size=D, num_heads=HEADS))
    x, c = torch.randn(2, 10, D), torch.randn(2, D)
    ref = _reference_dit(x, c, block.state_dict(), HEADS)
    with attention_backend(backend):
        got = block(x, c)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_fresh_blocks_are_identity():
    x = torch.randn(2, 6, 9, D)
    c = torch.randn(2, 6, D)
    assert torch.equal(DiTBlock(hidden_size=D, num_heads=HEADS)(x[:, 0], c[:, 0]), x[:, 0])
    assert torch.equal(STDiTBlock(hidden_size=D, num_heads=HEADS)(x, c), x)


def test_dit_block_adaln_linear_runs_once_per_sample():
    block = DiTBlock(hidden_size=D, num_heads=HEADS)
    seen = []
    block.adaLN_modulation[1].register_forward_hook(lambda m, i, o: seen.append(i[0].shape))
    block(torch.randn(3, 50, D), torch.randn(3, D))
    assert seen == [torch.Size([3, D])]


# ---- STDiTBlock --------------------------------------------------------------------------


def test_stdit_block_matches_reference_formula():
    block = _perturb(STDiTBlock(hidden_size=D, num_heads=HEADS))
    x, c = torch.randn(2, 6, 5, D), torch.randn(2, 6, D)
    ref = _reference_stdit(x, c, block.state_dict(), HEADS)
    torch.testing.assert_close(block(x, c), ref, rtol=1e-5, atol=1e-5)


def test_stdit_temporal_mask_is_applied():
    block = _perturb(STDiTBlock(hidden_size=D, num_heads=HEADS))
    x, c = torch.randn(1, 4, 3, D), torch.randn(1, 4, D)
    ref = _reference_stdit(x, c, block.state_dict(), HEADS, causal=True)
    got = block(x, c, temporal_mask=FrameCausalMask(num_frames=4, tokens_per_frame=1))
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cond_shape", ["b d", "b t d"])
def test_stdit_adaln_linear_runs_per_frame_never_per_token(cond_shape):
    block = STDiTBlock(hidden_size=D, num_heads=HEADS)
    seen = []
    block.adaLN_modulation[1].register_forward_hook(lambda m, i, o: seen.append(i[0].shape))
    c = torch.randn(2, D) if cond_shape == "b d" else torch.randn(2, 6, D)
    block(torch.randn(2, 6, 40, D), c)
    assert seen == [torch.Size([2, 6, D])]  # 12 rows, not 2 * 6 * 40 tokens


def test_stdit_per_sample_conditioning_equals_repeated_per_frame_exactly():
    block = _perturb(STDiTBlock(hidden_size=D, num_heads=HEADS))
    x, c = torch.randn(2, 6, 7, D), torch.randn(2, D)
    assert torch.equal(block(x, c), block(x, c[:, None].repeat(1, 6, 1)))
    final = _perturb(FinalLayer(hidden_size=D, patch_dim=12))
    assert torch.equal(final(x, c), final(x, c[:, None].repeat(1, 6, 1)))


def _zero_temporal_branch(block: STDiTBlock) -> None:
    with torch.no_grad():
        block.attn_temporal.proj.weight.zero_()
        block.attn_temporal.proj.bias.zero_()


def test_stdit_frame_output_depends_only_on_own_conditioning_without_temporal_mixing():
    block = _perturb(STDiTBlock(hidden_size=D, num_heads=HEADS))
    _zero_temporal_branch(block)
    x, c = torch.randn(2, 6, 5, D), torch.randn(2, 6, D)
    base = block(x, c)
    for i in (0, 3):
        c2 = c.clone()
        c2[:, i] += 1.0
        out = block(x, c2)
        others = [j for j in range(6) if j != i]
        assert torch.equal(out[:, others], base[:, others])
        assert (out[:, i] - base[:, i]).abs().max() > 1e-3


def test_stdit_attention_locality():
    """Spatial attention stays within a frame; temporal attention stays at one token position."""
    x, c = torch.randn(1, 4, 5, D), torch.randn(1, 4, D)
    x2 = x.clone()
    x2[:, 2, 3] += 1.0  # frame 2, token 3
    # only spatial (temporal output zeroed): frames other than 2 untouched
    block = _perturb(STDiTBlock(hidden_size=D, num_heads=HEADS))
    _zero_temporal_branch(block)
    diff = (block(x2, c) - block(x, c)).abs().amax(dim=(0, 3))  # t n
    assert torch.all(diff[[0, 1, 3]] == 0) and torch.all(diff[2] > 0)
    # only temporal (spatial output zeroed): token positions other than 3 untouched
    block = _perturb(STDiTBlock(hidden_size=D, num_heads=HEADS))
    with torch.no_grad():
        block.attn.proj.weight.zero_()
        block.attn.proj.bias.zero_()
    diff = (block(x2, c) - block(x, c)).abs().amax(dim=(0, 3))
    assert torch.all(diff[:, [0, 1, 2, 4]] == 0) and torch.all(diff[:, 3] > 0)


def test_stdit_from_dit_block_processes_each_frame_like_the_dit_block():
    dit = _perturb(DiTBlock(hidden_size=D, num_heads=HEADS))
    block = _perturb(STDiTBlock(hidden_size=D, num_heads=HEADS))
    block.load_dit_block(dit)
    x, c = torch.randn(2, 3, 5, D), torch.randn(2, D)
    out = block(x, c)
    for frame in range(3):
        torch.testing.assert_close(out[:, frame], dit(x[:, frame], c), rtol=1e-5, atol=1e-5)


def test_constructor_and_input_errors_name_values():
    for cls in (DiTBlock, STDiTBlock):
        with pytest.raises(ValueError, match=r"hidden_size \(30\).*num_heads \(4\)"):
            cls(hidden_size=30, num_heads=4)
        with pytest.raises(ValueError, match=r"mlp_ratio \(0"):
            cls(hidden_size=32, num_heads=4, mlp_ratio=0.0)
    block = STDiTBlock(hidden_size=D, num_heads=HEADS)
    with pytest.raises(ValueError, match="5 frames"):
        block(torch.randn(2, 6, 3, D), torch.randn(2, 5, D))


@pytest.mark.skipif(not TYPECHECK, reason="AVBLOCKS_TYPECHECK=0 in this run")
def test_shape_check_names_argument_and_axis():
    block = STDiTBlock(hidden_size=D, num_heads=HEADS)
    with pytest.raises(TypeCheckError, match=r"(?s)'c'.*d=32"):
        block(torch.randn(2, 6, 3, D), torch.randn(2, D + 1))


# ---- FinalLayer ----------------------------------------------------------------------------


def test_final_layer_keys_zero_init_and_formula():
    layer = FinalLayer(hidden_size=D, patch_dim=2 * 2 * 8)
    shapes = {k: tuple(v.shape) for k, v in layer.state_dict().items()}
    assert shapes == {
        "linear.weight": (32, D),
        "linear.bias": (32,),
        "adaLN_modulation.1.weight": (2 * D, D),
        "adaLN_modulation.1.bias": (2 * D,),
    }
    x, c = torch.randn(2, 7, D), torch.randn(2, D)
    assert torch.equal(layer(x, c), torch.zeros(2, 7, 32))
    _perturb(layer)
    sd = layer.state_dict()
    shift, scale = (v[:, None] for v in _ada(c, sd, 2))
    ref = (_ln(x) * (1 + scale) + shift) @ sd["linear.weight"].T + sd["linear.bias"]
    torch.testing.assert_close(layer(x, c), ref, rtol=1e-5, atol=1e-5)


# ---- torch.compile -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["dit", "stdit"])
def test_compile_fullgraph_no_recompile(kind):
    torch._dynamo.reset()
    if kind == "dit":
        block = _perturb(DiTBlock(hidden_size=D, num_heads=HEADS))
        args = (torch.randn(2, 8, D), torch.randn(2, D))
    else:
        block = _perturb(STDiTBlock(hidden_size=D, num_heads=HEADS))
        args = (torch.randn(2, 6, 8, D), torch.randn(2, 6, D))
    counter = CompileCounter()
    compiled = torch.compile(block, backend=counter, fullgraph=True)
    first = compiled(*args)
    second = compiled(*args)
    assert counter.frame_count == 1
    torch.testing.assert_close(first, block(*args), rtol=1e-5, atol=1e-5)
    assert torch.equal(first, second)


# ---- patches -------------------------------------------------------------------------------


def _dit_unpatchify(x, c, p):
    """facebookresearch/DiT's unpatchify, written from its formula (reshape + einsum)."""
    n = x.shape[0]
    h = w = int(x.shape[1] ** 0.5)
    x = x.reshape(n, h, w, p, p, c)
    return torch.einsum("nhwpqc->nchpwq", x).reshape(n, c, h * p, w * p)


def test_unpatchify2d_matches_dit_layout_and_patchify_indexing():
    c, p = 3, 2
    tokens = torch.randn(2, 16, p * p * c)
    img = unpatchify2d(tokens, p, (8, 8))
    assert torch.equal(img, _dit_unpatchify(tokens, c, p))
    # direct index formula: token (i, j) value (pi, qj, ch) is pixel (ch, i*p+pi, j*p+qj)
    x = torch.randn(1, c, 4, 6)
    tok = patchify2d(x, (2, 3))
    for i, j, pi, qj, ch in [(0, 0, 0, 0, 0), (1, 1, 1, 2, 2), (1, 0, 0, 1, 1)]:
        assert tok[0, i * 2 + j, (pi * 3 + qj) * c + ch] == x[0, ch, i * 2 + pi, j * 3 + qj]


@given(
    b=st.integers(1, 2),
    c=st.integers(1, 3),
    grid=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    patch=st.tuples(st.integers(1, 3), st.integers(1, 3)),
)
def test_patchify2d_round_trip_exact(b, c, grid, patch):
    size = (grid[0] * patch[0], grid[1] * patch[1])
    x = torch.randn(b, c, *size)
    tokens = patchify2d(x, patch)
    assert tokens.shape == (b, grid[0] * grid[1], patch[0] * patch[1] * c)
    assert torch.equal(unpatchify2d(tokens, patch, size), x)


@given(
    b=st.integers(1, 2),
    c=st.integers(1, 3),
    grid=st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3)),
    patch=st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 3)),
)
def test_patchify3d_round_trip_exact(b, c, grid, patch):
    size = tuple(g * p for g, p in zip(grid, patch, strict=True))
    x = torch.randn(b, c, *size)
    tokens = patchify3d(x, patch)
    assert tokens.shape == (b, math.prod(grid), math.prod(patch) * c)
    assert torch.equal(unpatchify3d(tokens, patch, size), x)
    # frame-major order: the first grid[1]*grid[2] tokens come from the first temporal slab
    first_slab = patchify3d(x[:, :, : patch[0]], patch)
    assert torch.equal(tokens[:, : grid[1] * grid[2]], first_slab)


def test_patch_embeds_are_linear_maps_of_patchify():
    emb2 = PatchEmbed2d(in_channels=3, hidden_size=8, patch_size=2)
    x = torch.randn(2, 3, 6, 4)
    w = emb2.proj.weight.permute(0, 2, 3, 1).reshape(8, -1)  # d (p q c)
    ref = patchify2d(x, 2) @ w.T + emb2.proj.bias
    torch.testing.assert_close(emb2(x), ref, rtol=1e-5, atol=1e-5)
    assert set(emb2.state_dict()) == {"proj.weight", "proj.bias"}  # DiT's x_embedder.proj

    emb3 = PatchEmbed3d(in_channels=2, hidden_size=8, patch_size=(1, 2, 2))
    v = torch.randn(1, 2, 3, 4, 6)
    w = emb3.proj.weight.permute(0, 2, 3, 4, 1).reshape(8, -1)  # d (pt ph pw c)
    ref = patchify3d(v, (1, 2, 2)) @ w.T + emb3.proj.bias
    torch.testing.assert_close(emb3(v), ref, rtol=1e-5, atol=1e-5)


def test_patch_errors_name_sizes():
    with pytest.raises(ValueError, match=r"size 7 of axis 'w'.*patch size 2"):
        patchify2d(torch.randn(1, 1, 4, 7), 2)
    with pytest.raises(ValueError, match=r"size 5 of axis 't'.*patch size 2"):
        patchify3d(torch.randn(1, 1, 5, 4, 4), (2, 2, 2))
    with pytest.raises(ValueError, match=r"size 9 of axis 'h'"):
        PatchEmbed2d(in_channels=1, hidden_size=4, patch_size=2)(torch.randn(1, 1, 9, 4))
    with pytest.raises(ValueError, match=r"5 tokens cannot tile size \(4, 4\)"):
        unpatchify2d(torch.randn(1, 5, 12), 2, (4, 4))
    with pytest.raises(ValueError, match=r"token width 10 .* patch volume 4"):
        unpatchify2d(torch.randn(1, 4, 10), 2, (4, 4))
    with pytest.raises(ValueError, match=r"patch_size \(0\)"):
        PatchEmbed3d(in_channels=1, hidden_size=4, patch_size=0)
