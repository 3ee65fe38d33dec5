"""FlexAttention backend: block-sparse attention from a mask's structure.

The mask's ``block_mask(block_size, device)`` gives the ``BlockMask`` (empty tiles skipped,
full tiles unmasked, partial tiles evaluated with ``mask_mod``); it is cached on the mask.

Compiled mode compiles ``flex_attention`` once per (mask key, shapes, dtype, device, scale,
block size) and keeps the compiled callable in :data:`COMPILED` (``len(COMPILED)`` counts
compilations). Each entry gets its own code object, so TorchDynamo's per-code recompile
limit is never shared between masks: a new mask is a new compile, never a silent eager
fallback. ``fullgraph=True``: a graph break raises instead of degrading.

Inside an outer ``torch.compile`` the backend calls ``flex_attention`` directly and lets the
outer compile handle it. Eager mode (``compile=False``) runs PyTorch's unfused reference
path: correct, slow, ``O(nq * nk)`` memory; meant for tests and debugging.
"""

import types
import warnings

import torch
from torch import Tensor
from torch.nn.attention.flex_attention import flex_attention

from avblocks.attention.dispatch import Backend, UnsupportedAttentionError
from avblocks.attention.masks import FullMask, Mask

__all__ = ["FlexBackend", "COMPILED"]

COMPILED: dict[tuple, object] = {}
"""Compiled flex_attention callables by (mask key, shapes, dtype, device, scale, block)."""


def _flex_call(q, k, v, block_mask, scale, enable_gqa):
    return flex_attention(q, k, v, block_mask=block_mask, scale=scale, enable_gqa=enable_gqa)


def _fresh_copy(fn):
    """A copy of ``fn`` with its own code object (its own Dynamo cache entry list)."""
    code = fn.__code__.replace()
    return types.FunctionType(code, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)


class FlexBackend(Backend):
    """``torch.nn.attention.flex_attention`` with the mask's BlockMask.

    Constraints: the mask must implement ``mask_mod`` (``None`` means a full mask);
    float16/bfloat16/float32 (float64 only in eager mode); no backward on CPU (PyTorch's
    FlexAttention has no CPU backward: inputs that require grad on CPU are refused).
    """

    def __init__(self, compile: bool = True, block_size: int = 128) -> None:
        self.compile = compile
        self.block_size = block_size
        self.name = "flex" if compile else "flex_eager"
        self.constraints = "masks with mask_mod; fp16/bf16/fp32; no CPU backward" + (
            "; compiled once per (mask, shapes)" if compile else "; eager reference path"
        )
        self.dtypes = (torch.float16, torch.bfloat16, torch.float32) + (
            () if compile else (torch.float64,)
        )

    def check(self, q: Tensor, k: Tensor, v: Tensor, mask: Mask | None) -> None:
        super().check(q, k, v, mask)
        if mask is not None and type(mask).mask_mod is Mask.mask_mod:
            raise UnsupportedAttentionError(
                f"backend {self.name!r} needs a mask with mask_mod; "
                f"{type(mask).__name__} has only dense(): use backend 'sdpa' or 'math'"
            )
        needs_grad = torch.is_grad_enabled() and (
            q.requires_grad or k.requires_grad or v.requires_grad
        )
        if needs_grad and q.device.type == "cpu":
            raise UnsupportedAttentionError(
                f"backend {self.name!r}: PyTorch FlexAttention has no backward on CPU; "
                "run under torch.no_grad() / inference, or use backend 'sdpa' or 'math' "
                "for training on CPU"
            )

    def run(self, q: Tensor, k: Tensor, v: Tensor, mask: Mask | None, scale: float) -> Tensor:
        if mask is None:
            mask = FullMask(q.shape[2], k.shape[2])
        gqa = q.shape[1] != k.shape[1]
        if not torch.is_grad_enabled():
            # No graph is recorded anyway; detaching lets PyTorch's CPU-backward check pass.
            q, k, v = q.detach(), k.detach(), v.detach()
        block_mask = mask.block_mask(self.block_size, q.device)
        if torch.compiler.is_compiling():
            return flex_attention(q, k, v, block_mask=block_mask, scale=scale, enable_gqa=gqa)
        if not self.compile:
            with warnings.catch_warnings():
                # PyTorch warns that the eager path is unfused: that is the point here.
                warnings.filterwarnings("ignore", message=".*flex_attention called without.*")
                return flex_attention(q, k, v, block_mask=block_mask, scale=scale, enable_gqa=gqa)
        key = (
            mask.key(),
            tuple(q.shape),
            tuple(k.shape),
            q.dtype,
            q.device,
            scale,
            self.block_size,
            q.requires_grad or k.requires_grad or v.requires_grad,
        )
        fn = COMPILED.get(key)
        if fn is None:
            fn = torch.compile(_fresh_copy(_flex_call), fullgraph=True, dynamic=False)
            COMPILED[key] = fn
        return fn(q, k, v, block_mask, scale, gqa)
