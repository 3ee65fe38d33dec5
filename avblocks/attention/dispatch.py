"""The one attention entry point, :func:`attend`, and its backends.

Layout (as ``F.scaled_dot_product_attention``): ``q: b hq nq d``, ``k, v: b hk nk d``,
output ``b hq nq d``. ``hq`` must be a multiple of ``hk`` (grouped-query attention): query
head ``j`` uses key/value head ``j // (hq // hk)``, i.e. each key/value head serves a run of
``hq // hk`` consecutive query heads (SDPA's ``enable_gqa`` convention). The scale defaults
to ``1 / sqrt(d)``.

Backends (see :data:`BACKENDS`; each records what it can honour and raises
:class:`UnsupportedAttentionError` otherwise; none silently falls back or drops an option):

- ``"math"``: the reference, ``softmax(q k^T * scale + bias) v`` with the mask as a
  ``-inf`` bias, computed in float32 (float64 stays float64) and cast back to the input
  dtype. Accepts everything; memory is ``O(nq * nk)`` per head.
- ``"sdpa"`` (default): ``F.scaled_dot_product_attention`` with the mask's dense boolean
  matrix; no mask for ``None``/full masks, ``is_causal=True`` when the mask is exactly
  token-causal. Any :class:`~avblocks.attention.masks.Mask` with a ``dense()``.
- ``"flex"``: ``torch.nn.attention.flex_attention`` with a ``BlockMask`` built from the
  mask's structure (empty tiles skipped), compiled with ``torch.compile`` once per
  (mask, shapes, dtype, device) and cached. Needs a mask with ``mask_mod``.
- ``"flex_eager"``: the same without compiling (PyTorch's unfused reference path: slow,
  for correctness checks and debugging).

Choice of backend, first that applies: the ``backend`` argument > the innermost
:func:`attention_backend` context > the ``AVBLOCKS_ATTENTION_BACKEND`` environment variable
(read at each eager call) > ``"sdpa"``. Under ``torch.compile`` the context is guarded (a
switch recompiles) but the environment variable is read once when the graph is traced:
switch compiled code with the argument or the context manager.
"""

import contextlib
import math
import os
import threading
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from avblocks.attention.masks import Mask
from avblocks.typing import shapecheck

__all__ = [
    "attend",
    "attention_backend",
    "Backend",
    "BACKENDS",
    "register_backend",
    "get_backend",
    "UnsupportedAttentionError",
    "ENV_VAR",
    "DEFAULT_BACKEND",
]

ENV_VAR = "AVBLOCKS_ATTENTION_BACKEND"
"""The environment variable that names the default backend."""
DEFAULT_BACKEND = "sdpa"
"""The backend used when neither an argument, a context manager nor ``ENV_VAR`` names one."""


class UnsupportedAttentionError(ValueError):
    """The chosen backend cannot honour this request (mask, dtype, head dim, ...)."""


class Backend:
    """An attention implementation and the constraints it can honour.

    Subclasses set ``name`` and ``constraints`` (a one-line human description), implement
    :meth:`run` and extend :meth:`check` (call ``super().check`` first).
    """

    name: str = "?"
    constraints: str = ""
    dtypes: tuple[torch.dtype, ...] = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

    def check(self, q: Tensor, k: Tensor, v: Tensor, mask: Mask | None) -> None:
        """Raise :class:`UnsupportedAttentionError` if this request cannot be honoured."""
        if q.dtype not in self.dtypes:
            raise UnsupportedAttentionError(
                f"backend {self.name!r} does not support dtype {q.dtype} "
                f"(supports {[str(d) for d in self.dtypes]})"
            )

    def run(self, q: Tensor, k: Tensor, v: Tensor, mask: Mask | None, scale: float) -> Tensor:
        """Attention of ``q`` over ``k``/``v`` (``b h n d``), called after :meth:`check` passed."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class MathBackend(Backend):
    name = "math"
    constraints = "any mask, any float dtype, any head dim; float32 internally; O(nq*nk) memory"

    def run(self, q: Tensor, k: Tensor, v: Tensor, mask: Mask | None, scale: float) -> Tensor:
        work = torch.float64 if q.dtype == torch.float64 else torch.float32
        groups = q.shape[1] // k.shape[1]
        qf = q.to(work)
        kf = k.to(work).repeat_interleave(groups, dim=1)
        vf = v.to(work).repeat_interleave(groups, dim=1)
        scores = torch.matmul(qf, kf.transpose(-2, -1)) * scale
        if mask is not None and not mask.is_full:
            scores = scores.masked_fill(~mask.dense(q.device), float("-inf"))
        out = torch.matmul(torch.softmax(scores, dim=-1), vf)
        return out.to(q.dtype)


class SDPABackend(Backend):
    name = "sdpa"
    constraints = "any mask with dense() (dense boolean attn_mask, O(nq*nk) bools)"

    def run(self, q: Tensor, k: Tensor, v: Tensor, mask: Mask | None, scale: float) -> Tensor:
        gqa = q.shape[1] != k.shape[1]
        if mask is None or mask.is_full:
            return F.scaled_dot_product_attention(q, k, v, scale=scale, enable_gqa=gqa)
        if mask.is_causal:
            return F.scaled_dot_product_attention(
                q, k, v, is_causal=True, scale=scale, enable_gqa=gqa
            )
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask.dense(q.device), scale=scale, enable_gqa=gqa
        )


BACKENDS: dict[str, Backend] = {}
"""Registered backends by name."""


def register_backend(backend: Backend) -> Backend:
    """Add (or replace) a backend under ``backend.name``; returns it."""
    BACKENDS[backend.name] = backend
    return backend


def _register_defaults() -> None:
    from avblocks.attention.flex import FlexBackend

    register_backend(MathBackend())
    register_backend(SDPABackend())
    register_backend(FlexBackend(compile=True))
    register_backend(FlexBackend(compile=False))


# Per-thread backend chosen by attention_backend(). A threading.local rather than a
# ContextVar because TorchDynamo traces (and guards on) threading.local attributes but
# graph-breaks on ContextVar.get: attend() must compile with fullgraph=True.
_LOCAL = threading.local()


def get_backend(backend: str | Backend | None = None) -> Backend:
    """Resolve a backend: argument > :func:`attention_backend` context > env var > default."""
    if backend is None:
        backend = getattr(_LOCAL, "backend", None)
    if backend is None:
        backend = os.environ.get(ENV_VAR) or DEFAULT_BACKEND
    if isinstance(backend, Backend):
        return backend
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(
            f"unknown attention backend {backend!r}; valid: {sorted(BACKENDS)}"
            + (f" (from ${ENV_VAR})" if backend == os.environ.get(ENV_VAR) else "")
        )
    return BACKENDS[backend]


@contextlib.contextmanager
def attention_backend(backend: str | Backend) -> Iterator[Backend]:
    """Use ``backend`` for every :func:`attend` without an explicit backend in this block.

    Per thread (``threading.local``); contexts nest. Under ``torch.compile`` the choice is
    guarded, so switching backends recompiles instead of reusing the other backend's graph.
    """
    resolved = get_backend(backend)  # validate the name on entry
    previous = getattr(_LOCAL, "backend", None)
    _LOCAL.backend = resolved
    try:
        yield resolved
    finally:
        _LOCAL.backend = previous


@shapecheck
def attend(
    q: Float[Tensor, "b hq nq d"],
    k: Float[Tensor, "b hk nk d"],
    v: Float[Tensor, "b hk nk d"],
    mask: Mask | None = None,
    backend: str | Backend | None = None,
    scale: float | None = None,
) -> Float[Tensor, "b hq nq d"]:
    """Attention of ``q`` over ``k, v`` under ``mask`` (``None`` = full attention).

    See the module docstring for layout, grouped-query heads, scale and backend choice.
    Raises ``ValueError`` for inconsistent inputs and :class:`UnsupportedAttentionError`
    when the chosen backend cannot honour the request.
    """
    hq, hk = q.shape[1], k.shape[1]
    if hq % hk:
        raise ValueError(f"query heads ({hq}) must be a multiple of key/value heads ({hk})")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v dtypes differ: {q.dtype}, {k.dtype}, {v.dtype}")
    if mask is not None and (mask.q_len != q.shape[2] or mask.kv_len != k.shape[2]):
        raise ValueError(
            f"{mask!r} is for q_len={mask.q_len}, kv_len={mask.kv_len}, "
            f"but q has {q.shape[2]} tokens and k/v have {k.shape[2]}"
        )
    chosen = get_backend(backend)
    chosen.check(q, k, v, mask)
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    return chosen.run(q, k, v, mask, scale)


_register_defaults()
