"""STDiT (ProAV-DiT's denoiser over stacked planes): the recipe's contract, conditioning,
initialisation, save/load, checkpointing, a tiny fit, compile."""

import pytest
import torch
from checkpointing import assert_checkpointing_changes_nothing
from torch._dynamo.testing import CompileCounter

from avblocks.attention.positional import dit_sincos_2d
from avblocks.dit.blocks import FinalLayer, STDiTBlock
from avblocks.dit.patch import patchify2d, unpatchify2d
from avblocks.dit.stdit import STDiT, STDiTConfig
from avblocks.typing import TYPECHECK

C, F, S, P, D = 4, 6, 8, 2, 32
TINY = dict(
    in_channels=C, side=S, frames=F, patch=P, hidden_size=D, depth=2, num_heads=2,
    mlp_ratio=2.0, num_classes=3, class_dropout=0.1, timestep_scale=1000.0,
)


def _model(**overrides) -> STDiT:
    return STDiT(**{**TINY, **overrides}).eval()


@torch.no_grad()
def _perturb(module: torch.nn.Module, std: float = 0.05) -> torch.nn.Module:
    """Move every parameter off its init (the zero adaLN / final layer would hide everything)."""
    for p in module.parameters():
        p.add_(torch.randn_like(p) * std)
    return module


def _inputs(b: int = 2):
    return torch.randn(b, C, F, S, S), torch.rand(b), torch.randint(0, 3, (b,))


# ---- the contract ------------------------------------------------------------------------


def test_recipe_contract_shapes_and_null_label():
    model = STDiT(in_channels=4, side=16, frames=6, patch=2, hidden_size=128, depth=4,
                  num_heads=4, mlp_ratio=4.0, num_classes=4, class_dropout=0.1,
                  timestep_scale=1000.0)
    assert model.null_label == 4
    x = torch.randn(2, 4, 6, 16, 16)
    out = model(x, torch.rand(2), torch.tensor([1, model.null_label]))
    assert out.shape == x.shape
    out = model(x, torch.rand(2, 6), torch.tensor([0, 3]))
    assert out.shape == x.shape


def test_fresh_model_outputs_exact_zero():
    model = _model()
    x, t, y = _inputs()
    assert torch.equal(model(x, t, y), torch.zeros_like(x))
    model.train()  # label dropout path too
    assert torch.equal(model(x, t, y), torch.zeros_like(x))


@pytest.mark.parametrize("patch", [P, (1, 4), (4, 2)], ids=str)
def test_matches_reference_built_plane_by_plane(patch):
    """Independent reference: patchify2d / unpatchify2d per plane, conv as a matmul on the
    (p q c) patch layout, DiT's sin-cos table, the blocks and final layer called directly.
    Rectangular ``(p, q)`` patches give a ``(s/p) x (s/q)`` token grid."""
    model = _perturb(_model(patch=patch))
    p, q = (patch, patch) if isinstance(patch, int) else patch
    x, t, y = _inputs()
    t_planes = torch.rand(2, F)
    with torch.no_grad():
        w = model.x_embedder.proj.weight  # d c p q
        w_flat = w.permute(0, 2, 3, 1).reshape(D, -1)  # d (p q c)
        planes = [
            patchify2d(x[:, :, i], (p, q)) @ w_flat.T + model.x_embedder.proj.bias for i in range(F)
        ]
        tok = torch.stack(planes, dim=1)  # b f n d
        tok = tok + dit_sincos_2d(D, (S // p, S // q)) + model.plane_embed[None, :, None]
        c = model.t_embedder(t_planes * 1000.0) + model.y_embedder.embedding_table.weight[y][:, None]
        for block in model.blocks:
            tok = block(tok, c)
        patches = model.final_layer(tok, c)
        ref = torch.stack([unpatchify2d(patches[:, i], (p, q), (S, S)) for i in range(F)], dim=2)
        torch.testing.assert_close(model(x, t_planes, y), ref, rtol=1e-5, atol=1e-5)


# ---- timesteps per plane -----------------------------------------------------------------


def test_per_sample_t_equals_same_t_repeated_per_plane():
    model = _perturb(_model())
    x, t, y = _inputs()
    with torch.no_grad():
        assert torch.equal(model(x, t, y), model(x, t[:, None].expand(2, F).clone(), y))


def test_output_of_a_plane_depends_on_its_own_timestep():
    model = _perturb(_model())
    x, _, y = _inputs()
    t = torch.full((2, F), 0.5)
    t2 = t.clone()
    t2[:, 3] = 0.9
    with torch.no_grad():
        a, b = model(x, t, y), model(x, t2, y)
    assert (a[:, :, 3] - b[:, :, 3]).abs().max() > 1e-3


def test_without_temporal_mixing_a_plane_timestep_only_moves_that_plane():
    """With the temporal branch gated off, planes never meet: changing t_3 changes plane 3
    and leaves the other five bit-identical (conditioning is per plane, not pooled)."""
    model = _perturb(_model())
    with torch.no_grad():
        for block in model.blocks:
            ada = block.adaLN_modulation[1]
            ada.weight[6 * D:].zero_()
            ada.bias[6 * D:].zero_()
    x, _, y = _inputs()
    t = torch.full((2, F), 0.5)
    t2 = t.clone()
    t2[:, 3] = 0.1
    with torch.no_grad():
        a, b = model(x, t, y), model(x, t2, y)
    others = [i for i in range(F) if i != 3]
    assert torch.equal(a[:, :, others], b[:, :, others])
    assert (a[:, :, 3] - b[:, :, 3]).abs().max() > 1e-3


def test_temporal_attention_mixes_planes():
    """With the temporal branch on, a change in plane 0's input reaches plane 5's output."""
    model = _perturb(_model())
    x, t, y = _inputs()
    x2 = x.clone()
    x2[:, :, 0] += 1.0
    with torch.no_grad():
        a, b = model(x, t, y), model(x2, t, y)
    assert (a[:, :, 5] - b[:, :, 5]).abs().max() > 1e-4


# ---- class conditioning ------------------------------------------------------------------


def test_class_label_and_null_label_change_the_output():
    model = _perturb(_model())
    x, t, _ = _inputs()
    with torch.no_grad():
        outs = [model(x, t, torch.full((2,), k)) for k in (0, 1, model.null_label)]
    for i in range(3):
        for j in range(i + 1, 3):
            assert (outs[i] - outs[j]).abs().max() > 1e-3


def test_label_dropout_in_training_replaces_labels_by_null():
    model = _perturb(_model(class_dropout=1.0))
    x, t, y = _inputs()
    with torch.no_grad():
        null = model(x, t, torch.full_like(y, model.null_label))
        model.train()
        dropped = model(x, t, y)
    assert torch.equal(dropped, null)


def test_no_null_label_without_class_dropout():
    model = _model(class_dropout=0.0)
    x, t, _ = _inputs()
    if TYPECHECK:
        with pytest.raises(ValueError, match="no null label"):
            model(x, t, torch.tensor([0, model.null_label]))
    else:
        with pytest.raises(IndexError):
            model(x, t, torch.tensor([0, model.null_label]))


# ---- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(side=9), r"side \(9\) must be divisible by patch \(2\)"),
        (dict(patch=(1, 3)), r"side \(8\) must be divisible by patch \(\(1, 3\)\)"),
        (dict(patch=(0, 2)), r"patch \(\(0, 2\)\) must be a positive int or 2 positive ints"),
        (dict(patch=(1, 2, 2)), r"patch \(\(1, 2, 2\)\) must be a positive int or 2"),
        (dict(hidden_size=30, num_heads=4), r"hidden_size \(30\) .* num_heads \(4\)"),
        (dict(hidden_size=6, num_heads=2), r"hidden_size \(6\) must be divisible by 4"),
        (dict(depth=0), r"depth \(0\)"),
        (dict(timestep_scale=0.0), r"timestep_scale"),
    ],
)
def test_constructor_errors_name_the_values(overrides, message):
    with pytest.raises(ValueError, match=message):
        STDiT(**{**TINY, **overrides})


def test_forward_errors_name_the_shapes():
    model = _model()
    x, t, y = _inputs()
    with pytest.raises(ValueError, match="expected b c f s s"):
        model(torch.randn(2, C, F, S + 2, S + 2), t, y)
    with pytest.raises(ValueError, match=r"per-plane t has 5 entries"):
        model(x, torch.rand(2, 5), y)


# ---- save / load, checkpointing ------------------------------------------------------------


@pytest.mark.parametrize("patch", [P, (1, 4)], ids=str)
def test_save_load_round_trip(tmp_path, patch):
    model = _perturb(_model(patch=patch))
    model.save_pretrained(tmp_path)
    loaded = STDiT.from_pretrained(tmp_path).eval()
    assert loaded.config == model.config == STDiTConfig(**{**TINY, "patch": patch})
    assert "pos_embed" not in model.state_dict()  # rebuilt from the config, never saved
    x, t, y = _inputs()
    with torch.no_grad():
        assert torch.equal(loaded(x, t, y), model(x, t, y))


def test_gradient_checkpointing_same_outputs_and_grads():
    torch.manual_seed(1)
    plain = _perturb(_model())
    ckpt = _model(gradient_checkpointing=True)
    ckpt.load_state_dict(plain.state_dict())
    x, _, y = _inputs()
    t = torch.rand(2, F)
    assert_checkpointing_changes_nothing(plain, ckpt, x, t, y)


# ---- learning ----------------------------------------------------------------------------


def test_tiny_model_fits_a_few_denoising_targets():
    """Flow-matching pairs (x_t, t, y) -> velocity for 4 fixed clips: the loss must fall by a
    large factor (>20x) in 60 Adam steps (the model can learn at all: gradients reach
    every part through the zero-initialised gates)."""
    torch.manual_seed(0)
    model = STDiT(**{**TINY, "hidden_size": 64, "class_dropout": 0.0}).train()
    x0 = torch.randn(4, C, F, S, S)
    noise = torch.randn_like(x0)
    t = torch.rand(4, F)
    tb = t[:, None, :, None, None]
    xt = (1 - tb) * x0 + tb * noise
    target = noise - x0
    y = torch.tensor([0, 1, 2, 0])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss = torch.mean((model(xt, t, y) - target) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] > 1.5  # the zero prediction's loss: E|noise - x0|^2 = 2
    assert losses[-1] < losses[0] / 20, losses[::5]


# ---- compile -----------------------------------------------------------------------------


def test_compile_fullgraph_one_graph_no_recompile():
    torch._dynamo.reset()
    model = _perturb(_model())
    x, t, y = _inputs()
    counter = CompileCounter()
    compiled = torch.compile(model, backend=counter, fullgraph=True)
    with torch.no_grad():
        first = compiled(x, t, y)
        second = compiled(x, t, y)
        eager = model(x, t, y)
    assert counter.frame_count == 1
    torch.testing.assert_close(first, eager, rtol=1e-5, atol=1e-5)
    assert torch.equal(first, second)


def test_blocks_are_the_library_blocks():
    """The recipe relies on DiT-compatible sub-module names (DiT weights can seed blocks)."""
    model = _model()
    assert all(isinstance(b, STDiTBlock) for b in model.blocks) and len(model.blocks) == 2
    assert isinstance(model.final_layer, FinalLayer)
    names = set(model.state_dict())
    for key in ("x_embedder.proj.weight", "t_embedder.mlp.0.weight",
                "y_embedder.embedding_table.weight", "plane_embed",
                "blocks.0.adaLN_modulation.1.weight", "final_layer.linear.weight"):
        assert key in names
