"""avblocks.dit.DiT against a reference DiT built here from timm's modules the way
facebookresearch/DiT's models.py builds it (its key names, its init, its forward): checkpoint
loading (.pt with weights_only, wrapped dicts, .safetensors), strict key errors, other
latent sizes, presets, initialisation, forward_with_cfg."""

import argparse
import math

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from timm.models.vision_transformer import Attention, Mlp, PatchEmbed
from torch import nn
from torch._dynamo.testing import CompileCounter

from avblocks.dit.dit import DIT_PRESETS, DiT, DiTConfig, load_dit_checkpoint
from avblocks.saveload import CheckpointError

TINY = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=2,
            mlp_ratio=4.0, class_dropout_prob=0.1, num_classes=5, learn_sigma=True)


# ---- the reference: DiT's models.py rebuilt on timm's modules -------------------------------


def _sincos_1d(dim: int, pos: np.ndarray) -> np.ndarray:
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    angles = np.outer(pos.reshape(-1), omega)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def _reference_pos_embed(dim: int, grid: int) -> np.ndarray:
    # DiT/MAE: meshgrid(w, h) so the first half of the channels encodes the column.
    cols, rows = np.meshgrid(np.arange(grid, dtype=np.float32), np.arange(grid, dtype=np.float32))
    return np.concatenate([_sincos_1d(dim // 2, cols), _sincos_1d(dim // 2, rows)], axis=1)


class RefTimestepEmbedder(nn.Module):
    def __init__(self, hidden: int, freq: int = 256):
        super().__init__()
        self.freq = freq
        self.mlp = nn.Sequential(nn.Linear(freq, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t):
        half = self.freq // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
        args = t[:, None].float() * freqs[None]
        return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=-1))


class RefLabelEmbedder(nn.Module):
    def __init__(self, num_classes: int, hidden: int, dropout: float):
        super().__init__()
        self.num_classes, self.dropout = num_classes, dropout
        self.embedding_table = nn.Embedding(num_classes + int(dropout > 0), hidden)

    def forward(self, labels, train):
        if train and self.dropout > 0:
            drop = torch.rand(labels.shape[0]) < self.dropout
            labels = torch.where(drop, self.num_classes, labels)
        return self.embedding_table(labels)


def _mod(x, shift, scale):
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class RefBlock(nn.Module):
    def __init__(self, hidden: int, heads: int, ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden, num_heads=heads, qkv_bias=True)
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(in_features=hidden, hidden_features=int(hidden * ratio),
                       act_layer=lambda: nn.GELU(approximate="tanh"), drop=0)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 6 * hidden))

    def forward(self, x, c):
        s1, g1, a1, s2, g2, a2 = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + a1.unsqueeze(1) * self.attn(_mod(self.norm1(x), s1, g1))
        return x + a2.unsqueeze(1) * self.mlp(_mod(self.norm2(x), s2, g2))


class RefFinal(nn.Module):
    def __init__(self, hidden: int, patch: int, out: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden, patch * patch * out)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))

    def forward(self, x, c):
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(_mod(self.norm_final(x), shift, scale))


class RefDiT(nn.Module):
    def __init__(self, input_size, patch_size, in_channels, hidden_size, depth, num_heads,
                 mlp_ratio, class_dropout_prob, num_classes, learn_sigma):
        super().__init__()
        self.out_channels = 2 * in_channels if learn_sigma else in_channels
        self.patch = patch_size
        self.x_embedder = PatchEmbed(input_size, patch_size, in_channels, hidden_size, bias=True)
        self.t_embedder = RefTimestepEmbedder(hidden_size)
        self.y_embedder = RefLabelEmbedder(num_classes, hidden_size, class_dropout_prob)
        n = self.x_embedder.num_patches
        self.pos_embed = nn.Parameter(torch.zeros(1, n, hidden_size), requires_grad=False)
        self.blocks = nn.ModuleList(
            [RefBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth)])
        self.final_layer = RefFinal(hidden_size, patch_size, self.out_channels)
        grid = int(n ** 0.5)
        self.pos_embed.data.copy_(
            torch.from_numpy(_reference_pos_embed(hidden_size, grid)).float().unsqueeze(0))

    def forward(self, x, t, y):
        x = self.x_embedder(x) + self.pos_embed
        c = self.t_embedder(t) + self.y_embedder(y, self.training)
        for block in self.blocks:
            x = block(x, c)
        x = self.final_layer(x, c)
        b, n, _ = x.shape
        h = int(n ** 0.5)
        x = x.reshape(b, h, h, self.patch, self.patch, self.out_channels)
        x = torch.einsum("nhwpqc->nchpwq", x)
        return x.reshape(b, self.out_channels, h * self.patch, h * self.patch)

    def forward_with_cfg(self, x, t, y, cfg_scale):
        half = x[: len(x) // 2]
        out = self.forward(torch.cat([half, half], dim=0), t, y)
        eps, rest = out[:, :3], out[:, 3:]
        cond, uncond = torch.split(eps, len(eps) // 2, dim=0)
        guided = uncond + cfg_scale * (cond - uncond)
        return torch.cat([torch.cat([guided, guided], dim=0), rest], dim=1)


@torch.no_grad()
def _random_reference(**overrides) -> RefDiT:
    """A reference with random, non-zero weights everywhere (zero adaLN would hide errors)."""
    ref = RefDiT(**{**TINY, **overrides}).eval()
    for name, p in ref.named_parameters():
        if name != "pos_embed":
            p.copy_(torch.randn_like(p) * 0.2)
    return ref


def _inputs(b: int = 4, size: int = 8, classes: int = 5):
    x = torch.randn(b, 4, size, size)
    t = torch.randint(0, 1000, (b,))
    y = torch.randint(0, classes + 1, (b,))  # includes the null class
    return x, t, y


# ---- layout and reproduction ---------------------------------------------------------------


def test_state_dict_keys_and_shapes_equal_the_reference():
    ours = DiT(**TINY).state_dict()
    ref = RefDiT(**TINY).state_dict()
    # timm's Attention/Mlp/PatchEmbed have no parameters beyond DiT's (norms are Identity).
    assert {k: tuple(v.shape) for k, v in ours.items()} == {
        k: tuple(v.shape) for k, v in ref.items()}
    assert ours["y_embedder.embedding_table.weight"].shape == (6, 32)
    assert ours["final_layer.linear.weight"].shape == (2 * 2 * 8, 32)


def test_pos_embed_equals_dits_numpy_table_and_is_a_frozen_parameter():
    model = DiT(**TINY)
    expected = torch.from_numpy(_reference_pos_embed(32, 4)).float()[None]
    assert torch.allclose(model.pos_embed, expected, atol=1e-6)
    assert isinstance(model.pos_embed, nn.Parameter) and not model.pos_embed.requires_grad
    assert "pos_embed" in model.state_dict()


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_checkpoint_from_reference_reproduces_outputs(tmp_path, suffix):
    ref = _random_reference()
    path = tmp_path / f"dit{suffix}"
    state = {k: v.contiguous() for k, v in ref.state_dict().items()}
    if suffix == ".pt":
        torch.save(state, path)
    else:
        save_file(state, str(path))
    model = load_dit_checkpoint(DiT(**TINY).eval(), path)
    x, t, y = _inputs()
    with torch.no_grad():
        expected, got = ref(x, t, y), model(x, t, y)
        assert expected.shape == (4, 8, 8, 8)
        assert expected.abs().mean() > 1e-2  # non-trivial output
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
        y_cfg = torch.cat([y[:2], torch.full((2,), 5)])
        torch.testing.assert_close(model.forward_with_cfg(x, t, y_cfg, 4.0),
                                   ref.forward_with_cfg(x, t, y_cfg, 4.0), atol=1e-5, rtol=1e-5)


def test_float_timesteps_and_no_sigma_match_reference(tmp_path):
    ref = _random_reference(learn_sigma=False, class_dropout_prob=0.0)
    torch.save(ref.state_dict(), tmp_path / "dit.pth")
    model = load_dit_checkpoint(DiT(**{**TINY, "learn_sigma": False,
                                       "class_dropout_prob": 0.0}).eval(), tmp_path / "dit.pth")
    x = torch.randn(3, 4, 8, 8)
    t = torch.tensor([0.5, 17.25, 999.0])
    y = torch.tensor([0, 4, 2])
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, y), ref(x, t, y), atol=1e-5, rtol=1e-5)
    assert model.out_channels == 4 and model.y_embedder.embedding_table.num_embeddings == 5


def test_train_py_checkpoint_dict_loads_ema_by_default(tmp_path):
    ema, raw = _random_reference(), _random_reference()
    # DiT's train.py: {"model", "ema", "opt", "args"} with args an argparse.Namespace.
    payload = {"model": raw.state_dict(), "ema": ema.state_dict(), "opt": {"lr": 1e-4},
               "args": argparse.Namespace(model="DiT-XL/2", image_size=256)}
    torch.save(payload, tmp_path / "0050000.pt")
    x, t, y = _inputs()
    with torch.no_grad():
        model = load_dit_checkpoint(DiT(**TINY).eval(), tmp_path / "0050000.pt")
        torch.testing.assert_close(model(x, t, y), ema(x, t, y), atol=1e-5, rtol=1e-5)
        model = load_dit_checkpoint(DiT(**TINY).eval(), tmp_path / "0050000.pt", key="model")
        torch.testing.assert_close(model(x, t, y), raw(x, t, y), atol=1e-5, rtol=1e-5)


def test_pickled_code_is_refused(tmp_path):
    torch.save({"w": torch.zeros(1), "fn": _inputs}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="weights_only"):
        load_dit_checkpoint(DiT(**TINY), tmp_path / "evil.pt")


# ---- strictness ----------------------------------------------------------------------------


def test_missing_key_fails_naming_it(tmp_path):
    state = RefDiT(**TINY).state_dict()
    del state["blocks.1.mlp.fc2.bias"]
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "m.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing keys \['blocks\.1\.mlp\.fc2\.bias'\]"):
        load_dit_checkpoint(DiT(**TINY), tmp_path / "m.safetensors")


def test_extra_key_and_shape_mismatch_fail_naming_them(tmp_path):
    state = RefDiT(**TINY).state_dict()
    state["blocks.2.attn.qkv.weight"] = torch.zeros(96, 32)
    state["y_embedder.embedding_table.weight"] = torch.zeros(1001, 32)
    torch.save(state, tmp_path / "x.pt")
    model = DiT(**TINY)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError) as info:
        load_dit_checkpoint(model, tmp_path / "x.pt")
    message = str(info.value)
    assert "unexpected keys ['blocks.2.attn.qkv.weight']" in message
    assert "y_embedder.embedding_table.weight: saved (1001, 32) vs module (6, 32)" in message
    # nothing was copied
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_wrapping_dict_without_weights_fails_naming_entries(tmp_path):
    torch.save({"step": torch.tensor(3), "opt": {"lr": 1.0}}, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="'opt', 'step'"):
        load_dit_checkpoint(DiT(**TINY), tmp_path / "c.pt")


# ---- other latent sizes ----------------------------------------------------------------------


def test_checkpoint_of_another_grid_size_loads_and_matches_reference_at_that_size(tmp_path):
    big = _random_reference(input_size=16)  # a "256x256" checkpoint: 8x8 grid
    torch.save(big.state_dict(), tmp_path / "big.pt")
    small_ref = RefDiT(**TINY).eval()  # what DiT builds at input 8 (4x4 grid)
    weights = {k: v for k, v in big.state_dict().items() if k != "pos_embed"}
    small_ref.load_state_dict({**weights, "pos_embed": small_ref.pos_embed}, strict=True)
    model = load_dit_checkpoint(DiT(**TINY).eval(), tmp_path / "big.pt")
    x, t, y = _inputs(size=8)
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, y), small_ref(x, t, y), atol=1e-5, rtol=1e-5)
    # and the other way: a 12x12 latent model from the same file
    model = load_dit_checkpoint(DiT(**{**TINY, "input_size": 12}), tmp_path / "big.pt")
    assert model(*_inputs(size=12)).shape == (4, 8, 12, 12)


def test_wrong_input_size_names_the_expected_shape():
    with pytest.raises(ValueError, match="input_size"):
        DiT(**TINY)(*_inputs(size=16))


# ---- init, presets, config --------------------------------------------------------------------


def test_fresh_model_predicts_zero_and_initialises_as_dit():
    model = DiT(**TINY)
    x, t, y = _inputs()
    assert torch.equal(model(x, t, y), torch.zeros(4, 8, 8, 8))
    for block in model.blocks:
        assert not block.adaLN_modulation[1].weight.any()
        assert not block.adaLN_modulation[1].bias.any()
        assert not block.attn.qkv.bias.any()
        bound = math.sqrt(6 / (32 + 96))  # xavier-uniform of qkv as one (96, 32) matrix
        assert block.attn.qkv.weight.abs().max() <= bound
        assert block.attn.qkv.weight.abs().max() > 0.8 * bound
    big = DiT(**{**TINY, "hidden_size": 256, "num_heads": 4, "depth": 1, "num_classes": 400})
    for w in (big.y_embedder.embedding_table.weight, big.t_embedder.mlp[0].weight,
              big.t_embedder.mlp[2].weight):
        assert abs(w.std().item() - 0.02) < 0.002


def test_presets_match_dit_table():
    assert len(DIT_PRESETS) == 12
    assert DIT_PRESETS["DiT-XL/2"] == dict(depth=28, hidden_size=1152, num_heads=16, patch_size=2)
    assert DIT_PRESETS["DiT-S/8"] == dict(depth=12, hidden_size=384, num_heads=6, patch_size=8)
    assert DIT_PRESETS["DiT-B/4"] == dict(depth=12, hidden_size=768, num_heads=12, patch_size=4)
    assert DIT_PRESETS["DiT-L/2"] == dict(depth=24, hidden_size=1024, num_heads=16, patch_size=2)
    model = DiT.from_preset("DiT-S/8", depth=1, input_size=16, num_classes=3)
    assert model.config == DiTConfig(input_size=16, patch_size=8, hidden_size=384, depth=1,
                                     num_heads=6, num_classes=3)
    assert model.null_label == 3
    with pytest.raises(ValueError, match="DiT-XL/2"):
        DiT.from_preset("DiT-M/2")


def test_dit_xl2_parameter_count_matches_the_paper():
    # DiT-XL/2 at 256x256: 675,129,632 parameters (675M in the paper), pos_embed included.
    with torch.device("meta"):
        model = DiT.from_preset("DiT-XL/2")
    assert sum(p.numel() for p in model.parameters()) == 675_129_632


def test_save_pretrained_round_trip(tmp_path):
    model = DiT(**TINY).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(tmp_path / "dit")
    again = DiT.from_pretrained(tmp_path / "dit").eval()
    x, t, y = _inputs()
    assert torch.equal(again(x, t, y), model(x, t, y))


def test_forward_blocks_is_the_block_loop():
    model = DiT(**TINY)
    calls = []
    original = model.forward_blocks

    def spy(tokens, c):
        calls.append((tuple(tokens.shape), tuple(c.shape)))
        return original(tokens, c)

    model.forward_blocks = spy
    model(*_inputs())
    assert calls == [((4, 16, 32), (4, 32))]


def test_invalid_arguments_are_named():
    with pytest.raises(ValueError, match=r"input_size \(9\).*patch_size \(2\)"):
        DiT(**{**TINY, "input_size": 9})
    with pytest.raises(ValueError, match=r"hidden_size \(30\)"):
        DiT(**{**TINY, "hidden_size": 30})


def test_compile_fullgraph_one_graph_no_recompile():
    torch._dynamo.reset()
    model = DiT(**TINY).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    counter = CompileCounter()
    compiled = torch.compile(model, backend=counter, fullgraph=True)
    x, t, y = _inputs()
    with torch.no_grad():
        first = compiled(x, t, y)
        second = compiled(torch.randn_like(x), t, y)
        eager = model(x, t, y)
    assert counter.frame_count == 1
    torch.testing.assert_close(first, eager, rtol=1e-5, atol=1e-5)
    assert second.shape == first.shape
