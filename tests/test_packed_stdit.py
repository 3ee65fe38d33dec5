"""ST-DiT on packed planes: the layout (no padding token, per-plane grids and positions), the two
attentions against a mask built by hand, equality with the canvas model where planes need no
padding (a converted canvas checkpoint), local time attention, and the ST-DiT contract: per-plane
timesteps, held-clean planes, guidance, step caches, compile, save/load, checkpointing."""

import itertools

import pytest
import torch
from checkpointing import assert_checkpointing_changes_nothing
from torch._dynamo.testing import CompileCounter

from avblocks.attention import attend, attention_backend
from avblocks.attention.positional import dit_sincos_2d
from avblocks.diffusion import ClassifierFreeGuidance, FlowHeunSampler
from avblocks.dit.cache import FirstBlockCache, TeaCache
from avblocks.dit.compile import compile_blocks
from avblocks.dit.packed_attention import (
    PackedPlanesMask,
    across_plan,
    across_planes,
    within_planes,
)
from avblocks.dit.packed_stdit import (
    DEMO_PLANES,
    PackedSTDiT,
    PackedSTDiTConfig,
    packed_from_canvas,
)
from avblocks.dit.packed_tokens import PackedTokens
from avblocks.dit.plane_pack import PlanePack
from avblocks.dit.plane_stack import PlaneStack
from avblocks.dit.stdit import STDiT
from avblocks.latent.planes import AUDIO_PLANES, PLANE_ORDER, VIDEO_PLANES

C, D = 4, 32
SQUARE = ((8, 8), (16, 8), (16, 8), (16, 5), (16, 16), (16, 5))  # the demo's planes, 2x2 patches
LONG = ((8, 8), (48, 8), (48, 8), (16, 5), (48, 16), (48, 5))  # a 48-frame clip
TINY = dict(in_channels=C, hidden_size=D, depth=2, num_heads=2, mlp_ratio=2.0, num_classes=3)


@torch.no_grad()
def _perturb(module: torch.nn.Module, seed: int = 0, std: float = 0.05) -> torch.nn.Module:
    """Move every parameter off its init (the zero adaLN / final layer would hide everything)."""
    g = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        p.add_(torch.randn(p.shape, generator=g) * std)
    return module


def _model(planes=DEMO_PLANES, patch=(1, 16), seed: int = 0, **overrides) -> PackedSTDiT:
    torch.manual_seed(seed)
    return _perturb(PackedSTDiT(planes=planes, patch=patch, **{**TINY, **overrides}), seed).eval()


def _latent(planes=DEMO_PLANES, b: int = 2, seed: int = 0) -> torch.Tensor:
    cells = sum(r * c for r, c in planes)
    return torch.randn(b, C, cells, generator=torch.Generator().manual_seed(seed))


# ---- the layouts ----------------------------------------------------------------------------


def test_plane_pack_round_trips_bit_exactly_and_spreads_plane_values_over_cells():
    pack = PlanePack(shapes=DEMO_PLANES, channels=C)
    planes = [torch.randn(2, C, r, c) for r, c in DEMO_PLANES]
    latent = pack.pack(planes)
    assert latent.shape == (2, C, 64 + 128 + 128 + 80 + 256 + 80) == pack.latent_shape(2)
    assert all(torch.equal(a, b) for a, b in zip(pack.unpack(latent), planes, strict=True))
    values = torch.arange(12.0).view(2, 6)
    cells = pack.frame_values(values)
    assert cells.shape == (2, pack.cells)
    assert torch.equal(cells[:, :64], values[:, :1].expand(2, 64))  # video hw: value 0 / 6
    assert torch.equal(cells[:, -80:], values[:, 5:].expand(2, 80))  # audio tw
    assert torch.equal(pack.plane_values(cells), values)
    assert pack.valid_mask.all() and pack.valid_mask.shape == (pack.cells,)
    with pytest.raises(ValueError, match=r"plane audio_th is \(16, 15\), expected \(16, 16\)"):
        pack.pack(planes[:4] + [torch.randn(2, C, 16, 15)] + planes[5:])
    with pytest.raises(ValueError, match="expected b planes"):
        pack.frame_values(torch.zeros(2, 5))


def test_demo_layout_has_no_padding_token_and_one_token_per_plane_row():
    layout = PackedTokens(DEMO_PLANES, (1, 16))
    assert [p.name for p in layout.planes] == ["video_th", "video_tw", "audio_th", "audio_tw", "audio_hw",
                                               "video_hw"]
    assert [p.patch for p in layout.planes] == [(1, 8), (1, 8), (1, 16), (1, 5), (1, 5), (1, 8)]
    assert all(p.grid == (p.shape[0], 1) for p in layout.planes)
    assert layout.num_tokens == 16 * 5 + 8 and layout.padding_cells() == 0  # the canvas had 96 tokens
    assert [(r.count, r.tokens) for r in layout.runs] == [(5, 16), (1, 8)]
    square = PackedTokens(SQUARE, 2)  # audio width 5 -> 3 token columns, the last one half real
    assert square.by_index[5].grid == (8, 3) and square.padding_cells() == 2 * 16
    assert square.num_tokens == 16 + 32 + 32 + 24 + 64 + 24


def test_positions_are_each_plane_grid_and_equal_the_canvas_table_at_the_same_cells():
    layout = PackedTokens(SQUARE, 2)
    table = layout.positions(D)
    canvas = dit_sincos_2d(D, (8, 8))  # the canvas model's table, 16 x 16 canvas with 2x2 patches
    for p in layout.planes:
        rows, cols = p.grid
        mine = table[p.start:p.start + p.tokens].view(rows, cols, D)
        assert torch.equal(mine, canvas.view(8, 8, D)[:rows, :cols])
    # the time rows of video and audio share their codes: frame r is the same row everywhere
    th_video, th_audio = layout.by_index[1], layout.by_index[4]
    assert torch.equal(table[th_video.start:th_video.start + 4], table[th_audio.start:th_audio.start + 4][:, :])


@pytest.mark.parametrize(("overrides", "message"), [
    (dict(planes=DEMO_PLANES[:5]), "must be 6"),
    (dict(patch=(0, 2)), r"patch \(\(0, 2\)\) must be a positive int"),
    (dict(across="frames"), "across .* must be one of"),
    (dict(time_window=0), "time_window"),
    (dict(planes=LONG, time_window=5), r"time_window \(5\) must divide the 48 token rows of plane video_th"),
    (dict(hidden_size=30), r"hidden_size \(30\)"),
])
def test_constructor_errors_name_the_values(overrides, message):
    with pytest.raises(ValueError, match=message):
        PackedSTDiT(**{**TINY, "planes": DEMO_PLANES, "patch": (1, 16), **overrides})


# ---- the attentions against a mask built by hand ----------------------------------------------


def _hand_mask(layout: PackedTokens, kind: str) -> torch.Tensor:
    """Who attends to whom, from the rules written plainly (tokens in the layout's order)."""
    tokens = []
    for p in layout.planes:
        rows, cols = -(-p.shape[0] // p.patch[0]), -(-p.shape[1] // p.patch[1])
        tokens += [(p.index, r, c, PLANE_ORDER[p.index][-2:] in ("th", "tw"), rows)
                   for r in range(rows) for c in range(cols)]
    n = len(tokens)
    allowed = torch.zeros(n, n, dtype=torch.bool)
    w = layout.time_window
    for i, j in itertools.product(range(n), range(n)):
        (pi, ri, ci, ti, rows), (pj, rj, cj, tj, _) = tokens[i], tokens[j]
        if kind == "within":
            if pi != pj:
                continue
            if ti and w is not None and rows > w:
                tiles = rows // w
                start = min(max(ri // w - 1, 0), tiles - min(3, tiles))
                allowed[i, j] = start <= rj // w < start + min(3, tiles)
            else:
                allowed[i, j] = True
        elif layout.across == "position":
            allowed[i, j] = (ri, ci) == (rj, cj)
        else:
            allowed[i, j] = (ti and tj and ri == rj) or not ti or not tj
    return allowed


def _math(q, k, v, allowed):
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    return torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1) @ v


CASES = [(DEMO_PLANES, (1, 16), "position", None), (DEMO_PLANES, (1, 16), "time", None),
         (SQUARE, 2, "position", None), (SQUARE, 2, "time", None), (LONG, (1, 16), "position", 8),
         (LONG, (1, 16), "time", 12), (LONG, (4, 4), "position", 4), (((8, 8),) * 6, 2, "position", None)]


@pytest.mark.parametrize(("planes", "patch", "across", "window"), CASES, ids=str)
def test_segments_and_the_flex_mask_equal_attention_under_the_hand_built_mask(planes, patch, across, window):
    layout = PackedTokens(planes, patch, across=across, time_window=window)
    b, h, e, n = 2, 2, 8, layout.num_tokens
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(b, n, h * e, generator=g) for _ in range(3))
    flat = [layout.to_flat(x) for x in (q, k, v)]
    for kind, fn in (("within", within_planes), ("across", across_planes)):
        allowed = _hand_mask(layout, kind)
        assert torch.equal(PackedPlanesMask(layout, kind).dense(), allowed)
        heads = [x.view(b, n, h, e).transpose(1, 2) for x in (q, k, v)]
        reference = _math(*heads, allowed).transpose(1, 2).reshape(b, n, h * e)
        for backend in ("sdpa", "flex_eager"):
            out = layout.from_flat(fn(layout, *flat, h, b, backend=backend), b)
            torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5, msg=f"{kind} {backend}")
        pairs = layout.attention_pairs()[kind]
        assert pairs == int(allowed.sum())  # what the benchmarks count as attention FLOPs


def test_segments_run_on_views_where_planes_line_up():
    """Row tokens: within-plane attention on (k b) h n e views and the time rule's frame groups
    on a 1 (b n h) k e view of q, k, v: no gather of their values."""
    layout = PackedTokens(DEMO_PLANES, (1, 16), across="time")

    plan = across_plan(layout)
    assert plan["spans"] == [(0, 4)] and not plan["groups"]  # the four time planes, strided
    canvas_like = PackedTokens(((8, 8),) * 6, 2)
    assert across_plan(canvas_like)["spans"] == [(0, 6)] and not across_plan(canvas_like)["groups"]


def test_local_time_attention_covering_the_clip_is_full_attention_exactly():
    wide = _model(LONG, time_window=48)
    full = _model(LONG)
    x, t, y = _latent(LONG), torch.rand(2, 6), torch.tensor([0, 1])
    with torch.no_grad():
        assert torch.equal(wide(x, t, y), full(x, t, y))
    assert wide.layout.attention_pairs() == full.layout.attention_pairs()


def test_local_time_attention_is_local():
    """One block, window 8 rows: a change on the first frame of the video th plane reaches only
    the time-plane rows of the first two tiles (16 frames); later frames are bit-identical."""
    model = _model(LONG, time_window=8, depth=1)
    x, t, y = _latent(LONG), torch.rand(2, 6), torch.tensor([0, 1])
    pack = PlanePack(shapes=LONG, channels=C)
    planes = [p.clone() for p in pack.unpack(x)]
    planes[1][:, :, 0] += 1.0
    with torch.no_grad():
        before, after = (pack.unpack(model(z, t, y)) for z in (x, pack.pack(planes)))
    for i in (1, 2, 4, 5):  # the time planes
        assert torch.equal(before[i][:, :, 16:], after[i][:, :, 16:])
    assert (before[1][:, :, :8] - after[1][:, :, :8]).abs().max() > 1e-4
    assert model.layout.attention_pairs()["within"] < _model(LONG, depth=1).layout.attention_pairs()["within"]


# ---- equality with the canvas model -----------------------------------------------------------


def _assert_same_on_real_cells(canvas: STDiT, packed: PackedSTDiT, planes) -> None:
    stack, pack = PlaneStack(shapes=planes, channels=C), PlanePack(shapes=planes, channels=C)
    planes_in = [torch.randn(2, C, *s) for s in planes]
    t, y = torch.rand(2, 6), torch.tensor([0, 2])
    with torch.no_grad():
        ours = pack.unpack(packed(pack.pack(planes_in), t, y))
        theirs = stack.unstack(canvas(stack.stack(planes_in), t, y))
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("planes", "patch"), [(((8, 8),) * 6, 2), (((16, 16),) * 6, (1, 16)),
                                               (((8, 8),) * 6, (2, 4))], ids=str)
def test_a_converted_canvas_checkpoint_computes_the_same_where_planes_need_no_padding(tmp_path, planes, patch):
    side = max(max(p) for p in planes)
    torch.manual_seed(0)
    canvas = _perturb(STDiT(side=side, frames=6, patch=patch, **TINY)).eval()
    canvas.save_pretrained(tmp_path / "canvas")
    packed = packed_from_canvas(STDiT.from_pretrained(tmp_path / "canvas"), planes).eval()
    _assert_same_on_real_cells(canvas, packed, planes)


def test_on_the_demo_planes_the_packed_model_is_the_canvas_model_less_its_padding_tokens():
    """Where canvas padding is a whole token the two differ only through attention: with both
    attention branches gated off, every real cell's output is the canvas model's (the kernel
    and final layer cropped per plane, the positions, the per-plane modulation)."""
    torch.manual_seed(0)
    canvas = _perturb(STDiT(side=16, frames=6, patch=(1, 16), **TINY)).eval()
    with torch.no_grad():
        for block in canvas.blocks:  # zero gate_msa and gate_tmp
            ada = block.adaLN_modulation[1]
            for index in (2, 8):
                ada.weight[index * D:(index + 1) * D].zero_()
                ada.bias[index * D:(index + 1) * D].zero_()
    _assert_same_on_real_cells(canvas, packed_from_canvas(canvas, DEMO_PLANES).eval(), DEMO_PLANES)
    with pytest.raises(ValueError, match="do not fit the canvas model's side 16"):
        packed_from_canvas(canvas, LONG)


# ---- the ST-DiT contract ----------------------------------------------------------------------


def test_fresh_model_outputs_exact_zero():
    model = PackedSTDiT(planes=DEMO_PLANES, **TINY).eval()
    x = _latent()
    assert torch.equal(model(x, torch.rand(2), torch.tensor([0, 1])), torch.zeros_like(x))


@pytest.mark.parametrize("across", ["position", "time"])
def test_times_per_sample_per_plane_and_per_cell_are_the_same(across):
    model = _model(across=across)
    pack = PlanePack(shapes=DEMO_PLANES, channels=C)
    x, t, y = _latent(), torch.rand(2), torch.tensor([0, 1])
    planes = t[:, None].expand(2, 6).clone()
    with torch.no_grad():
        out = model(x, t, y)
        assert torch.equal(model(x, planes, y), out)
        assert torch.equal(model(x, pack.frame_values(planes), y), out)
    bad = pack.frame_values(planes)
    bad[:, 3] += 0.1  # inside the video hw plane
    with pytest.raises(ValueError, match="constant within each plane"):
        model(x, bad, y)
    with pytest.raises(ValueError, match="one per plane"):
        model(x, torch.rand(2, 7), y)


def test_a_plane_timestep_moves_only_that_plane_without_across_plane_attention():
    model = _model()
    with torch.no_grad():
        for block in model.blocks:  # temporal (across-plane) branch gated off
            ada = block.adaLN_modulation[1]
            ada.weight[6 * D:].zero_()
            ada.bias[6 * D:].zero_()
    pack = PlanePack(shapes=DEMO_PLANES, channels=C)
    x, y = _latent(), torch.tensor([0, 1])
    t = torch.full((2, 6), 0.5)
    t2 = t.clone()
    t2[:, 3] = 0.1
    with torch.no_grad():
        a, b = pack.unpack(model(x, t, y)), pack.unpack(model(x, t2, y))
    assert all(torch.equal(a[i], b[i]) for i in range(6) if i != 3)
    assert (a[3] - b[3]).abs().max() > 1e-3


@pytest.mark.parametrize("across", ["position", "time"])
def test_across_plane_attention_carries_audio_to_video(across):
    model = _model(across=across)
    pack = PlanePack(shapes=DEMO_PLANES, channels=C)
    x, t, y = _latent(), torch.rand(2, 6), torch.tensor([0, 1])
    planes = [p.clone() for p in pack.unpack(x)]
    planes[4] += 1.0  # audio th
    with torch.no_grad():
        a, b = pack.unpack(model(x, t, y)), pack.unpack(model(pack.pack(planes), t, y))
    assert (a[1] - b[1]).abs().max() > 1e-4  # video th


def test_held_clean_planes_stay_exactly_and_guidance_uses_the_null_label():
    model = _model()
    pack = PlanePack(shapes=DEMO_PLANES, channels=C)
    condition = _latent(seed=3)
    clean = torch.zeros(2, 6, dtype=torch.bool)
    clean[:, AUDIO_PLANES] = True
    guided = ClassifierFreeGuidance(model, scale=2.0, null_label=model.null_label)
    with torch.no_grad():
        out = FlowHeunSampler().sample(guided, torch.randn_like(condition), 3, model_kwargs={"y": torch.tensor([0, 1])},
                                       clean_mask=pack.frame_values(clean), fixed=condition, progress=False)
        unguided = FlowHeunSampler().sample(model, torch.randn_like(condition), 3,
                                            model_kwargs={"y": torch.tensor([0, 1])}, progress=False)
    given, made = pack.unpack(out), pack.unpack(condition)
    assert all(torch.equal(given[i], made[i]) for i in range(3, 6))
    assert not any(torch.equal(given[i], made[i]) for i in range(3))
    assert unguided.shape == condition.shape
    x, t = _latent(), torch.rand(2)
    with torch.no_grad():
        assert (model(x, t, torch.tensor([0, 0])) - model(x, t, torch.full((2,), model.null_label))).abs().max() > 1e-3
    assert VIDEO_PLANES == slice(0, 3)


@pytest.mark.parametrize("cache", [FirstBlockCache, TeaCache])
def test_step_caches_reproduce_the_uncached_sampler_at_threshold_zero_and_skip_at_infinity(cache):
    model = _model(across="time")
    noise, y = _latent(seed=5), torch.tensor([0, 1])

    def sample():
        with torch.no_grad():
            return FlowHeunSampler().sample(model, noise, 3, model_kwargs={"y": y}, progress=False)

    reference = sample()
    with cache(model, threshold=0.0):
        assert torch.equal(sample(), reference)
    with cache(model, threshold=float("inf")) as skipping:
        sample()
    assert skipping.stats.skipped > 0


@pytest.mark.parametrize("across", ["position", "time"])
def test_compile_fullgraph_one_graph_no_recompile(across):
    torch._dynamo.reset()
    model = _model(across=across, depth=1)
    x, t, y = _latent(), PlanePack(shapes=DEMO_PLANES, channels=C).frame_values(torch.rand(2, 6)), torch.tensor([0, 1])
    counter = CompileCounter()
    compiled = torch.compile(model, backend=counter, fullgraph=True)
    with torch.no_grad():
        first, second, eager = compiled(x, t, y), compiled(x, t, y), model(x, t, y)
    assert counter.frame_count == 1
    torch.testing.assert_close(first, eager, rtol=1e-5, atol=1e-5)
    assert torch.equal(first, second)


def test_regional_compile_of_the_blocks_matches_eager():
    torch._dynamo.reset()
    model = _model(SQUARE, 2, across="time")
    x, t, y = _latent(SQUARE), torch.rand(2, 6), torch.tensor([0, 1])
    with torch.no_grad():
        eager = model(x, t, y)
        compile_blocks(model, backend="eager")
        torch.testing.assert_close(model(x, t, y), eager, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("across", "window"), [("position", None), ("time", 12)])
def test_save_load_round_trip(tmp_path, across, window):
    model = _model(LONG, across=across, time_window=window)
    model.save_pretrained(tmp_path)
    loaded = PackedSTDiT.from_pretrained(tmp_path).eval()
    assert loaded.config == model.config == PackedSTDiTConfig(**{**TINY, "planes": LONG, "patch": (1, 16),
                                                                 "across": across, "time_window": window})
    assert "pos_embed" not in model.state_dict()
    x, t, y = _latent(LONG), torch.rand(2, 6), torch.tensor([0, 1])
    with torch.no_grad():
        assert torch.equal(loaded(x, t, y), model(x, t, y))


def test_gradient_checkpointing_same_outputs_and_grads():
    plain = _model(SQUARE, 2).train()
    ckpt = PackedSTDiT(planes=SQUARE, patch=2, gradient_checkpointing=True, **TINY).train()
    ckpt.load_state_dict(plain.state_dict())
    torch.manual_seed(3)
    x, t, y = _latent(SQUARE), torch.rand(2, 6), torch.tensor([0, 1])
    assert_checkpointing_changes_nothing(plain, ckpt, x, t, y, seed=0)


def test_tiny_model_fits_a_few_denoising_targets():
    """Flow-matching pairs with per-plane times: the loss falls by a large factor in 60 steps
    (gradients reach every part through the zero-initialised gates and the run-wise ops; the
    gathered across-plane path's backward is checked in the checkpointing test above)."""
    torch.manual_seed(0)
    model = PackedSTDiT(planes=DEMO_PLANES, across="time", **{**TINY, "hidden_size": 64, "class_dropout": 0.0})
    pack = PlanePack(shapes=DEMO_PLANES, channels=C)
    x0, noise = torch.randn(4, C, pack.cells), torch.randn(4, C, pack.cells)
    t = pack.frame_values(torch.rand(4, 6))
    xt = (1 - t[:, None]) * x0 + t[:, None] * noise
    y = torch.tensor([0, 1, 2, 0])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss = torch.mean((model(xt, t, y) - (noise - x0)) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] > 1.5 and losses[-1] < losses[0] / 20, losses[::5]


def test_attention_goes_through_attend(monkeypatch):
    """Every attention of the block is an ``attend`` call (the backend choice applies)."""
    import avblocks.dit.packed_attention as module

    calls = []

    def spy(*args, **kwargs):
        calls.append(kwargs.get("backend"))
        return attend(*args, **kwargs)

    monkeypatch.setattr(module, "attend", spy)
    model = _model(depth=1, across="time")
    with torch.no_grad(), attention_backend("math"):
        model(_latent(), torch.rand(2), torch.tensor([0, 1]))
    assert calls and all(getattr(b, "name", b) == "math" for b in calls)
