"""The learned-sync slot: tiny TorchScript exports made here (an offset classifier whose answer
is worked out by hand, an embedding pair whose cosine is computed independently), and the
clear refusals: no file given, a missing file, a wrong output."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from avblocks.metrics import AVSimilarity, OffsetClassifier
from avblocks.metrics.learned import SYNCHFORMER_OFFSETS

SR = 16000


class _Offsets(nn.Module):
    """Logits peaked at grid index ``round(mean video value * 10) + 10``: a video of all 0.2
    predicts Synchformer's offset 0.4 s; it checks the layout (b t c h w) and the rate."""

    offsets_s: list[float]

    def __init__(self):
        super().__init__()
        self.offsets_s = list(SYNCHFORMER_OFFSETS)

    def forward(self, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        assert video.shape[2] == 3 and audio.shape[-1] == 8000  # b t c h w; 0.5 s at 16 kHz
        index = (video.mean(dim=(1, 2, 3, 4)) * 10).round().long() + 10
        return F.one_hot(index, 21).float()


class _Embed(nn.Module):
    def forward(self, video: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return video.mean(dim=(1, 3, 4)), audio[:, :3]  # b c (rgb means), b 3


class _Wrong(nn.Module):
    def forward(self, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        return video.mean(dim=(1, 2, 3, 4))


def _script(module: nn.Module, path):
    torch.jit.save(torch.jit.script(module), str(path))
    return path


def test_offset_classifier_predicts_the_grid_value(tmp_path):
    model = OffsetClassifier(_script(_Offsets(), tmp_path / "desync.pt"), sample_rate=SR)
    video = torch.stack([torch.full((3, 4, 8, 8), 0.2), torch.full((3, 4, 8, 8), -0.5), torch.zeros(3, 4, 8, 8)])
    audio = torch.zeros(3, 4000)  # 8 kHz: resampled to the export's 16 kHz
    predicted = model.predict(video, audio, 8000)
    torch.testing.assert_close(predicted, torch.tensor([0.4, -1.0, 0.0], dtype=torch.float64))
    assert model.desync(video, audio, 8000) == pytest.approx((0.4 + 1.0 + 0.0) / 3)


def test_similarity_is_the_cosine_of_the_two_embeddings(tmp_path):
    model = AVSimilarity(_script(_Embed(), tmp_path / "bind.pt"), sample_rate=SR)
    video = torch.rand(2, 3, 4, 8, 8) * 2 - 1
    audio = torch.rand(2, 16000) * 2 - 1
    v, a = video.mean(dim=(2, 3, 4)), audio[:, :3]
    expected = (v * a).sum(-1) / (v.norm(dim=-1) * a.norm(dim=-1))
    torch.testing.assert_close(model.similarity(video, audio, SR), expected)
    assert model.score(video, audio, SR) == pytest.approx(float(expected.mean()))


def test_refused_clearly_without_a_file_or_with_a_wrong_one(tmp_path):
    with pytest.raises(ValueError, match="desync_model.*downloads nothing"):
        OffsetClassifier(None, sample_rate=SR, setting="desync_model")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        AVSimilarity(tmp_path / "missing.pt", sample_rate=SR)
    wrong = _script(_Wrong(), tmp_path / "wrong.pt")
    with pytest.raises(ValueError, match="no offset grid"):
        OffsetClassifier(wrong, sample_rate=SR)
    model = OffsetClassifier(wrong, sample_rate=SR, offsets_s=[-0.2, 0.0, 0.2])
    with pytest.raises(ValueError, match=r"expected logits \(1, 3\)"):
        model.predict(torch.zeros(1, 3, 2, 4, 4), torch.zeros(1, 800), SR)
    with pytest.raises(ValueError, match="must return \\(video b d, audio b d\\)"):
        AVSimilarity(wrong, sample_rate=SR).similarity(torch.zeros(1, 3, 2, 4, 4), torch.zeros(1, 800), SR)
