"""The shape-check policy: checked in eager mode, invisible to torch.compile, removable at import."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from avblocks.typing import TYPECHECK, Float, Tensor, shapecheck


class Mix(nn.Module):
    """Mixes a video and an audio volume that share batch and time."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 4)

    @shapecheck
    def forward(
        self, video: Float[Tensor, "b cv t h w"], audio: Float[Tensor, "b ca t f w2"]
    ) -> Float[Tensor, "b t 4"]:
        v = video.mean(dim=(1, 3, 4))  # b t
        a = audio.mean(dim=(1, 3, 4))
        return self.proj(torch.stack([v, a, v * a, v - a], dim=-1))


pytestmark = pytest.mark.skipif(not TYPECHECK, reason="AVBLOCKS_TYPECHECK=0 in this run")


def test_good_shapes_pass():
    out = Mix()(torch.randn(2, 3, 5, 8, 8), torch.randn(2, 1, 5, 16, 4))
    assert out.shape == (2, 5, 4)


def test_wrong_shape_names_axis_and_sizes():
    with pytest.raises(Exception) as info:
        Mix()(torch.randn(2, 3, 5, 8, 8), torch.randn(2, 1, 7, 16, 4))  # t: 5 vs 7
    message = str(info.value)
    assert "t=5" in message  # the bound size of the offending axis
    assert "audio" in message  # and the argument that broke it


def test_wrong_rank_is_refused():
    with pytest.raises(Exception, match="audio"):
        Mix()(torch.randn(2, 3, 5, 8, 8), torch.randn(2, 5, 16, 4))


def test_return_shape_is_checked():
    @shapecheck
    def bad(x: Float[Tensor, "b n"]) -> Float[Tensor, "b n"]:
        return x[:, :-1]

    with pytest.raises(Exception, match="return"):
        bad(torch.randn(2, 3))


def test_compiles_fullgraph_without_graph_break_or_recompile():
    torch._dynamo.reset()
    from torch._dynamo.testing import CompileCounter

    counter = CompileCounter()
    model = Mix()
    compiled = torch.compile(model, backend=counter, fullgraph=True)
    video, audio = torch.randn(2, 3, 5, 8, 8), torch.randn(2, 1, 5, 16, 4)
    torch.testing.assert_close(compiled(video, audio), model(video, audio))
    compiled(torch.randn_like(video), torch.randn_like(audio))
    assert counter.frame_count == 1  # one graph: no break, no recompile


def test_typecheck_off_resolves_decorator_to_identity_at_import():
    code = textwrap.dedent(
        """
        import torch
        from avblocks.typing import TYPECHECK, Float, Tensor, shapecheck
        def f(x: Float[Tensor, "b n"]) -> Float[Tensor, "b n"]:
            return x
        assert TYPECHECK is False
        assert shapecheck(f) is f
        shapecheck(f)(torch.randn(2, 3, 4))  # wrong rank, unchecked
        print("ok")
        """
    )
    env = {**os.environ, "AVBLOCKS_TYPECHECK": "0"}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
