"""TimestepEmbedder / LabelEmbedder: DiT's formulas, key names and label dropout."""

import math

import pytest
import torch
import torch.nn.functional as F
from jaxtyping import TypeCheckError

from avblocks.dit.embedders import LabelEmbedder, TimestepEmbedder, timestep_embedding
from avblocks.typing import TYPECHECK


def _reference_sinusoid(t: list[float], dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Element by element: cos for the first half of the columns, sin for the second."""
    half = dim // 2
    out = torch.zeros(len(t), dim, dtype=torch.float64)
    for row, value in enumerate(t):
        for j in range(half):
            freq = math.exp(-math.log(max_period) * j / half)
            out[row, j] = math.cos(value * freq)
            out[row, half + j] = math.sin(value * freq)
    return out


@pytest.mark.parametrize("dim", [256, 7, 2])
def test_sinusoid_matches_formula_cos_first(dim):
    t = [0.0, 1.0, 17.5, 999.0]
    got = timestep_embedding(torch.tensor(t, dtype=torch.float64), dim)
    assert got.shape == (4, dim)
    torch.testing.assert_close(got, _reference_sinusoid(t, dim), rtol=0, atol=1e-9)
    # t = 0: cosines (first half) are 1, sines 0: the DiT order, not sin-first.
    assert torch.all(got[0, : dim // 2] == 1) and torch.all(got[0, dim // 2 :] == 0)


def test_sinusoid_int_and_float_steps_agree_and_float32_precision():
    steps = torch.tensor([0, 3, 500, 999])
    torch.testing.assert_close(
        timestep_embedding(steps, 256), timestep_embedding(steps.float(), 256), rtol=0, atol=0
    )
    ref = _reference_sinusoid([0.0, 3.0, 500.0, 999.0], 256).float()
    torch.testing.assert_close(timestep_embedding(steps, 256), ref, rtol=0, atol=1e-4)


def test_timestep_embedder_dit_keys_shapes_and_init():
    emb = TimestepEmbedder(hidden_size=192)
    shapes = {k: tuple(v.shape) for k, v in emb.state_dict().items()}
    assert shapes == {
        "mlp.0.weight": (192, 256),
        "mlp.0.bias": (192,),
        "mlp.2.weight": (192, 192),
        "mlp.2.bias": (192,),
    }
    assert isinstance(emb.mlp[1], torch.nn.SiLU)
    w = torch.cat([emb.mlp[0].weight.flatten(), emb.mlp[2].weight.flatten()])
    assert abs(w.std().item() - 0.02) < 0.002 and abs(w.mean().item()) < 0.002
    assert torch.all(emb.mlp[0].bias == 0) and torch.all(emb.mlp[2].bias == 0)


def test_timestep_embedder_matches_reference_mlp():
    emb = TimestepEmbedder(hidden_size=32, frequency_embedding_size=64)
    for p in emb.parameters():
        torch.nn.init.normal_(p, std=0.3)
    t = torch.tensor([0.0, 10.0, 999.0])
    freq = _reference_sinusoid(t.tolist(), 64).float()
    w0, b0, w2, b2 = (p.detach() for p in emb.parameters())
    ref = F.silu(freq @ w0.T + b0) @ w2.T + b2
    # float32 arguments t * freq (t up to 999) carry ~6e-5 absolute error into cos/sin
    torch.testing.assert_close(emb(t), ref, rtol=0, atol=3e-4)
    torch.testing.assert_close(emb(t[:2]), ref[:2], rtol=1e-5, atol=1e-5)


def test_timestep_embedder_per_frame_is_per_sample_embedding_of_each_entry():
    emb = TimestepEmbedder(hidden_size=16)
    t = torch.rand(3, 6) * 1000
    got = emb(t)
    assert got.shape == (3, 6, 16)
    for frame in range(6):
        torch.testing.assert_close(got[:, frame], emb(t[:, frame]), rtol=1e-6, atol=1e-6)


def test_timestep_embedder_rejects_bad_config_naming_value():
    with pytest.raises(ValueError, match=r"hidden_size \(0\)"):
        TimestepEmbedder(hidden_size=0)
    with pytest.raises(ValueError, match=r"frequency_embedding_size \(1\)"):
        TimestepEmbedder(hidden_size=8, frequency_embedding_size=1)


@pytest.mark.parametrize("dropout,rows", [(0.1, 10), (0.0, 9)])
def test_label_table_has_null_row_only_with_dropout(dropout, rows):
    emb = LabelEmbedder(num_classes=9, hidden_size=24, dropout_prob=dropout)
    assert list(emb.state_dict()) == ["embedding_table.weight"]
    assert emb.embedding_table.weight.shape == (rows, 24)
    assert abs(emb.embedding_table.weight.std().item() - 0.02) < 0.01


def test_label_force_drop_uses_null_class_and_keeps_others():
    emb = LabelEmbedder(num_classes=9, hidden_size=8, dropout_prob=0.1).eval()
    labels = torch.tensor([0, 4, 8, 2])
    out = emb(labels, force_drop_ids=torch.tensor([1, 0, 1, 0]))
    table = emb.embedding_table.weight
    torch.testing.assert_close(out, table[torch.tensor([9, 4, 9, 2])], rtol=0, atol=0)
    # a boolean mask works the same
    out_bool = emb(labels, force_drop_ids=torch.tensor([True, False, True, False]))
    torch.testing.assert_close(out_bool, out, rtol=0, atol=0)


def test_label_dropout_only_in_training():
    emb = LabelEmbedder(num_classes=5, hidden_size=8, dropout_prob=1.0)
    labels = torch.tensor([0, 1, 2, 3, 4])
    table = emb.embedding_table.weight
    torch.testing.assert_close(emb.eval()(labels), table[labels], rtol=0, atol=0)
    torch.testing.assert_close(emb.train()(labels), table[[5] * 5], rtol=0, atol=0)
    # explicit train argument overrides the module mode
    torch.testing.assert_close(emb.eval()(labels, train=True), table[[5] * 5], rtol=0, atol=0)


def test_label_dropout_rate_close_to_probability():
    emb = LabelEmbedder(num_classes=3, hidden_size=4, dropout_prob=0.25)
    labels = torch.zeros(20000, dtype=torch.long)
    dropped = (emb.drop_labels(labels) == emb.null_class).float().mean().item()
    assert abs(dropped - 0.25) < 0.02


def test_label_errors_name_values():
    with pytest.raises(ValueError, match=r"dropout_prob \(1.5\)"):
        LabelEmbedder(num_classes=3, hidden_size=4, dropout_prob=1.5)
    emb = LabelEmbedder(num_classes=3, hidden_size=4, dropout_prob=0.0)
    with pytest.raises(ValueError, match="null class"):
        emb(torch.tensor([0, 1]), force_drop_ids=torch.tensor([1, 0]))


@pytest.mark.skipif(not TYPECHECK, reason="AVBLOCKS_TYPECHECK=0 in this run")
def test_label_shape_check_rejects_float_labels():
    emb = LabelEmbedder(num_classes=3, hidden_size=4, dropout_prob=0.1)
    with pytest.raises(TypeCheckError, match="labels"):
        emb(torch.tensor([0.0, 1.0]))
