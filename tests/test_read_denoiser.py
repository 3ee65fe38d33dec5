""":class:`ReadDenoiser`'s audio modulation: zero at initialisation, heard once trained, saved."""

import copy

import torch

from avblocks.dit.read_denoiser import ReadDenoiser


def perturbed(audio_modulation: bool) -> ReadDenoiser:
    """A tiny denoiser with every parameter but the audio modulation's last Linear opened."""
    torch.manual_seed(0)
    model = ReadDenoiser(size=16, frames=4, patch=8, hidden_size=16, depth=1, num_heads=2, audio_dim=4,
                         audio_modulation=audio_modulation).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.startswith("audio_condition.1."):
                p.add_(torch.randn_like(p) * 0.2)
    return model


def inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, 3, 4, 16, 16, generator=g), torch.rand(2, 4, generator=g), torch.randn(2, 3, 4, generator=g)


def test_fresh_audio_modulation_leaves_the_output_unchanged():
    model = perturbed(audio_modulation=True)
    x, t, audio = inputs()
    with torch.no_grad():
        out = model(x, t, audio)
        without = copy.deepcopy(model)
        without.audio_condition = None
        assert torch.equal(out, without(x, t, audio))


def test_opened_audio_modulation_is_heard_and_saved(tmp_path):
    model = perturbed(audio_modulation=True)
    x, t, audio = inputs()
    with torch.no_grad():
        model.audio_condition[1].weight.normal_(0, 0.5)
        without = copy.deepcopy(model)
        without.audio_condition = None
        assert not torch.allclose(model(x, t, audio), without(x, t, audio), atol=1e-4)
        model.save_pretrained(tmp_path / "m")
        loaded = ReadDenoiser.from_pretrained(tmp_path / "m").eval()
        assert loaded.audio_condition is not None
        assert torch.equal(loaded(x, t, audio), model(x, t, audio))
