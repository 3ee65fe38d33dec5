"""Classifier-free guidance: the formula, one batched forward, and no extra compute at scale 1."""

import pytest
import torch

from avblocks.diffusion import ClassifierFreeGuidance, FlowEulerSampler

NULL = 9  # e.g. LabelEmbedder's "no class" index for 9 classes


class LabelModel(torch.nn.Module):
    """Output depends on the label non-linearly; records every call."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x, t, y, audio=None):
        self.calls.append({"b": x.shape[0], "y": y.clone()})
        gain = torch.sin(y.float() + 1.0).view(-1, *[1] * (x.ndim - 1))
        out = gain * x + t.view(-1, *[1] * (x.ndim - 1))
        if audio is not None:
            out = out + audio.mean(dim=1).view(-1, *[1] * (x.ndim - 1))
        return out


def test_guided_output_is_the_formula_in_one_forward():
    model = LabelModel()
    x, t, y = torch.randn(3, 2, 4, 5), torch.rand(3), torch.tensor([0, 4, 8])
    cond = model(x, t, y=y)
    uncond = model(x, t, y=torch.full_like(y, NULL))
    model.calls.clear()
    guided = ClassifierFreeGuidance(model, scale=4.0, null_label=NULL)(x, t, y=y)
    torch.testing.assert_close(guided, uncond + 4.0 * (cond - uncond))
    assert len(model.calls) == 1 and model.calls[0]["b"] == 6  # batched: cond first, then null
    assert model.calls[0]["y"].tolist() == [0, 4, 8, NULL, NULL, NULL]


def test_scale_one_runs_only_the_conditional_branch():
    model = LabelModel()
    x, t, y = torch.randn(3, 2, 4, 5), torch.rand(3), torch.tensor([0, 4, 8])
    out = ClassifierFreeGuidance(model, scale=1.0, null_label=NULL)(x, t, y=y)
    assert len(model.calls) == 1 and model.calls[0]["b"] == 3
    assert NULL not in model.calls[0]["y"].tolist()
    torch.testing.assert_close(out, model(x, t, y=y))


def test_per_frame_scale_and_tensor_null_condition():
    model = LabelModel()
    x, t, y = torch.randn(2, 2, 4, 5), torch.rand(2), torch.tensor([1, 2])
    audio = torch.randn(2, 7)
    scale = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0, 1.0, 5.0, 2.0]])  # b t
    cfg = ClassifierFreeGuidance(
        model, scale=scale, uncond_kwargs={"y": NULL, "audio": torch.zeros(7)}
    )
    guided = cfg(x, t, y=y, audio=audio)
    cond = model(x, t, y=y, audio=audio)
    uncond = model(x, t, y=torch.full_like(y, NULL), audio=torch.zeros(2, 7))
    for b in range(2):
        for k in range(4):
            s = scale[b, k]
            expected = uncond[b, :, k] + s * (cond[b, :, k] - uncond[b, :, k])
            torch.testing.assert_close(guided[b, :, k], expected)


def test_guided_model_drives_a_sampler():
    model = LabelModel()
    cfg = ClassifierFreeGuidance(model, scale=2.0, null_label=NULL)
    noise, y = torch.randn(2, 1, 3, 4), torch.tensor([3, 5])
    out = FlowEulerSampler().sample(cfg, noise, 3, model_kwargs={"y": y}, progress=False)
    x = noise
    for t0, t1 in ((1.0, 2 / 3), (2 / 3, 1 / 3), (1 / 3, 0.0)):
        t = torch.full((2,), t0)
        c, u = model(x, t, y=y), model(x, t, y=torch.full_like(y, NULL))
        x = x + (t1 - t0) * (u + 2.0 * (c - u))
    torch.testing.assert_close(out, x)


def test_bad_configuration_raises():
    with pytest.raises(ValueError, match="null condition"):
        ClassifierFreeGuidance(LabelModel(), scale=2.0)
    cfg = ClassifierFreeGuidance(LabelModel(), scale=2.0, uncond_kwargs={"audio": None})
    with pytest.raises(ValueError, match="'audio' cannot be batched"):
        cfg(torch.randn(2, 1, 3), torch.rand(2), y=torch.tensor([0, 1]), audio=torch.randn(2, 4))
    cfg = ClassifierFreeGuidance(LabelModel(), scale=2.0, null_label=NULL, label_key="label")
    with pytest.raises(ValueError, match="'label' is not among"):
        cfg(torch.randn(2, 1, 3), torch.rand(2), y=torch.tensor([0, 1]))
