"""The per-frame video embedding the READ recipe trains its audio codec against.

Used only while training the codec (:mod:`recipes.read_a2v.train`, stage 1): its embeddings
are the positives of the frame-level contrastive loss that makes each audio code say *when*
something happens. Thrown away afterwards.
"""

from einops import rearrange
from torch import Tensor, nn

from avblocks.latent.volume import VolumeEncoder


class FrameVideoEmbedder(nn.Module):
    """Per-frame video embedding ``b c t h w -> b t d`` for the codec's contrastive loss.

    A :class:`~avblocks.latent.volume.VolumeEncoder` (patch ``(1, p, p)``, its temporal
    convs see one frame each way per block, so motion is visible) averaged over space.
    Trained with the codec and thrown away afterwards (it only shapes the audio codes).
    """

    def __init__(self, *, in_channels: int = 3, dim: int = 32, hidden_channels: int = 32,
                 patch: int = 8) -> None:
        super().__init__()
        self.encoder = VolumeEncoder(in_channels=in_channels, latent_channels=dim,
                                     hidden_channels=hidden_channels, patch=(1, patch, patch),
                                     depth=1, groups=8)

    def forward(self, video: Tensor) -> Tensor:
        return rearrange(self.encoder(video).mean(dim=(3, 4)), "b d t -> b t d")
