"""Step caches: skip most of a DiT's block stack on sampling steps where it would change little.

Training-free acceleration of a sampler's denoiser calls. A cache *wraps the block stack*
of one model instance: it replaces the instance's ``forward_blocks(tokens, c)`` (the method
:class:`~avblocks.dit.stdit.STDiT` and the facebookresearch-style ``DiT`` call between
embedding and final layer) and restores it on :meth:`StepCache.detach`. Any model works that
has

- ``forward_blocks(tokens, c)`` (tokens ``b n d`` or ``b f n d``, conditioning ``b d`` or
  ``b f d``), and
- ``blocks``: an ``nn.ModuleList`` whose blocks are called ``block(tokens, c)`` and (for
  :class:`TeaCache`) have DiT's ``attention_input(tokens, c)`` (``norm1`` modulated by the
  first two ``adaLN_modulation`` vectors, as every :class:`~avblocks.dit.blocks.DiTBlock`).

Two policies (both OFF unless constructed; ``threshold=0`` never skips and reproduces the
uncached output bit for bit, because the computed path calls the same blocks in the same
order):

- :class:`FirstBlockCache` (ParaAttention's "first block cache"): every call runs the first
  block; ``r1 = block0(x) - x`` is compared with ``r1`` of the *last computed* call by the
  relative L1 change ``mean|r1 - r1_prev| / mean|r1_prev|``. Below ``threshold`` the other
  blocks are skipped and their residual from the last computed call is added back
  (``out = block0(x) + (rest_out - rest_in)_prev``); otherwise the rest runs and the cache
  is refreshed. Comparing against the last *computed* call (not the previous call) keeps
  small changes from accumulating unseen over many skipped steps.
- :class:`TeaCache` (Liu et al. 2024, "Timestep Embedding Tells: It's Time to Cache"): the
  first block's *modulated input* ``m = norm1(x) * (1 + scale) + shift`` (cheap: one norm
  and the first adaLN Linear) is compared with the *previous call's* ``m``; the relative L1
  change, optionally mapped through a polynomial ``rescale`` (TeaCache fits one per model
  to predict the output change from the input change; ``None`` = identity), is added to an
  accumulator. While the accumulator stays below ``threshold`` the whole stack is skipped
  and the stack residual of the last computed call is added (``out = x + (stack_out -
  stack_in)_prev``); once it reaches the threshold the stack runs and the accumulator
  resets to 0.

Shared choices:

- one decision per call for the whole batch (a classifier-free-guidance call carries both
  halves in one batch: they are skipped together). The change is a batch mean;
- the first ``warmup`` calls after a reset always compute (default 1: there is nothing to
  reuse before), and a call whose token or conditioning shape differs from the cached one
  computes and refreshes the cache (e.g. a different batch size);
- a cache must be reset between sampling runs (:meth:`StepCache.reset`, or use it as a
  context manager: ``with FirstBlockCache(model, threshold=0.1) as cache: sample(...)``
  resets on entry and detaches on exit). A new run does not announce itself to the block
  stack, so the cache cannot tell on its own;
- when gradients are enabled the cache steps aside (the original ``forward_blocks`` runs,
  with its gradient checkpointing): caching is an inference-time approximation;
- :attr:`StepCache.stats` counts computed and skipped calls and records each call's
  measured change (for choosing thresholds or fitting ``rescale``).
"""

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from avblocks.typing import Float, shapecheck

__all__ = [
    "CacheStats",
    "StepCache",
    "FirstBlockCache",
    "TeaCache",
    "relative_l1",
    "fit_rescale",
]


@shapecheck
def relative_l1(new: Float[Tensor, "*shape"], old: Float[Tensor, "*shape"]) -> float:
    """``mean|new - old| / mean|old|`` in float32 (``inf`` when ``old`` is all zero)."""
    new, old = new.float(), old.float()
    denom = old.abs().mean()
    if float(denom) == 0.0:
        return float("inf") if bool((new != old).any()) else 0.0
    return float((new - old).abs().mean() / denom)


@dataclass
class CacheStats:
    """What a cache did since its last reset: calls computed / skipped, and the change that
    each call measured (``nan`` where there was nothing to compare with)."""

    computed: int = 0
    skipped: int = 0
    changes: list[float] = field(default_factory=list)

    @property
    def calls(self) -> int:
        return self.computed + self.skipped

    @property
    def skip_ratio(self) -> float:
        """Fraction of calls that skipped the stack (0 when there were no calls)."""
        return self.skipped / self.calls if self.calls else 0.0

    def __str__(self) -> str:
        return (
            f"{self.calls} calls: {self.computed} computed, {self.skipped} skipped "
            f"({100 * self.skip_ratio:.0f} %)"
        )


def _check_model(model: nn.Module) -> None:
    if not isinstance(getattr(model, "blocks", None), nn.ModuleList) or not len(model.blocks):
        raise ValueError(
            f"{type(model).__name__} has no non-empty `blocks` ModuleList: a step cache needs "
            "the block stack as model.blocks"
        )
    if not callable(getattr(model, "forward_blocks", None)):
        raise ValueError(
            f"{type(model).__name__} has no forward_blocks(tokens, c): a step cache wraps that "
            "method"
        )


class StepCache:
    """Base class: attaches to ``model`` (replaces its instance's ``forward_blocks``).

    Subclasses implement :meth:`_cached_blocks`. ``threshold`` must be >= 0 (0: never skip),
    ``warmup`` >= 1 calls computed after each reset.
    """

    def __init__(self, model: nn.Module, *, threshold: float, warmup: int = 1) -> None:
        _check_model(model)
        if not threshold >= 0:
            raise ValueError(f"threshold ({threshold}) must be >= 0 (0 never skips)")
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 1:
            raise ValueError(f"warmup ({warmup!r}) must be an integer >= 1")
        if "forward_blocks" in vars(model):
            raise ValueError(
                f"{type(model).__name__}.forward_blocks is already wrapped (another cache is "
                "attached): detach it first"
            )
        self.model = model
        self.threshold = float(threshold)
        self.warmup = warmup
        self._original = model.forward_blocks
        #: Calls computed and skipped in this session, and each call's measured change.
        self.stats = CacheStats()
        self._state: dict[str, Tensor] = {}
        self._shapes: tuple | None = None
        model.forward_blocks = self._forward_blocks
        self.attached = True

    # ---- lifecycle -------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget cached tensors and statistics (call before each sampling run)."""
        self.stats = CacheStats()
        self._state = {}
        self._shapes = None

    def detach(self) -> None:
        """Give the model its own ``forward_blocks`` back (idempotent)."""
        if self.attached:
            del self.model.forward_blocks
            self.attached = False
        self._state = {}

    def __enter__(self) -> "StepCache":
        self.reset()
        return self

    def __exit__(self, *exc) -> None:
        self.detach()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(threshold={self.threshold}, warmup={self.warmup}, "
            f"stats={self.stats})"
        )

    # ---- the wrapped method ----------------------------------------------------------------
    def _forward_blocks(self, tokens: Tensor, c: Tensor) -> Tensor:
        if torch.is_grad_enabled() and (tokens.requires_grad or c.requires_grad):
            return self._original(tokens, c)
        shapes = (tuple(tokens.shape), tuple(c.shape), tokens.dtype, tokens.device)
        fresh = shapes != self._shapes or self.stats.calls < self.warmup
        if shapes != self._shapes:
            self._state = {}
            self._shapes = shapes
        return self._cached_blocks(tokens, c, fresh)

    def _run(self, blocks: Sequence[nn.Module], tokens: Tensor, c: Tensor) -> Tensor:
        for block in blocks:
            tokens = block(tokens, c)
        return tokens

    def _cached_blocks(self, tokens: Tensor, c: Tensor, fresh: bool) -> Tensor:
        raise NotImplementedError


class FirstBlockCache(StepCache):
    """First-block cache: skip blocks ``1..`` while the first block's residual barely moves.

    See the module docstring. Args: ``model`` (has ``blocks`` and ``forward_blocks``),
    ``threshold`` (relative L1 change of the first block's residual below which the rest is
    skipped; 0 never skips; ParaAttention uses about 0.05-0.12 on video DiTs), ``warmup``
    (calls always computed after a reset).
    """

    def _cached_blocks(self, tokens: Tensor, c: Tensor, fresh: bool) -> Tensor:
        blocks = list(self.model.blocks)
        first = blocks[0](tokens, c)
        residual = first - tokens
        previous = self._state.get("first_residual")
        change = float("nan") if previous is None else relative_l1(residual, previous)
        self.stats.changes.append(change)
        if not fresh and previous is not None and change < self.threshold:
            self.stats.skipped += 1
            return first + self._state["rest_residual"]
        out = self._run(blocks[1:], first, c)
        self._state = {"first_residual": residual, "rest_residual": out - first}
        self.stats.computed += 1
        return out


class TeaCache(StepCache):
    """TeaCache: skip the whole stack while the accumulated (rescaled) change of the first
    block's modulated input stays under ``threshold``.

    See the module docstring. Args: ``model`` (its first block needs ``attention_input``),
    ``threshold`` (accumulator limit; 0 never
    skips; TeaCache uses about 0.1-0.3), ``rescale`` (polynomial coefficients, highest
    degree first as ``numpy.polyval``, applied to each call's relative L1 change before
    accumulating; ``None`` = identity; :func:`fit_rescale` fits one), ``warmup``.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        threshold: float,
        rescale: Sequence[float] | None = None,
        warmup: int = 1,
    ) -> None:
        _check_model(model)
        block = model.blocks[0]
        if not callable(getattr(block, "attention_input", None)):
            raise ValueError(
                f"TeaCache needs the first block's modulated attention input (attention_input(x, c): "
                f"a DiT block with adaLN_modulation and norm1); {type(block).__name__} has none"
            )
        if rescale is not None and len(rescale) == 0:
            raise ValueError("rescale must hold at least one coefficient (or be None)")
        self.rescale = None if rescale is None else tuple(float(v) for v in rescale)
        super().__init__(model, threshold=threshold, warmup=warmup)
        self._accumulated = 0.0

    def reset(self) -> None:
        super().reset()
        self._accumulated = 0.0

    def _rescaled(self, change: float) -> float:
        if self.rescale is None:
            return change
        value = 0.0
        for coefficient in self.rescale:  # Horner: highest degree first
            value = value * change + coefficient
        return value

    @shapecheck
    def modulated_input(
        self, tokens: Float[Tensor, "*tokens d"], c: Float[Tensor, "b *frames d"]
    ) -> Float[Tensor, "*tokens d"]:
        """The first block's ``modulate(norm1(tokens), shift, scale)`` (its attention input),
        as the block computes it (:meth:`~avblocks.dit.blocks.DiTBlock.attention_input`)."""
        return self.model.blocks[0].attention_input(tokens, c)

    def _cached_blocks(self, tokens: Tensor, c: Tensor, fresh: bool) -> Tensor:
        modulated = self.modulated_input(tokens, c)
        previous = self._state.get("modulated")
        change = float("nan") if previous is None else relative_l1(modulated, previous)
        self.stats.changes.append(change)
        self._state["modulated"] = modulated
        if not fresh and previous is not None and "residual" in self._state:
            self._accumulated += self._rescaled(change)
            if self._accumulated < self.threshold:
                self.stats.skipped += 1
                return tokens + self._state["residual"]
        self._accumulated = 0.0
        out = self._run(self.model.blocks, tokens, c)
        self._state["residual"] = out - tokens
        self.stats.computed += 1
        return out


def fit_rescale(
    input_changes: Sequence[float], output_changes: Sequence[float], degree: int = 2
) -> tuple[float, ...]:
    """Least-squares polynomial (highest degree first) mapping a call's relative input change
    to its relative output change: TeaCache's ``rescale``, fitted on pairs measured on an
    uncached run (e.g. ``TeaCache(threshold=0).stats.changes`` against the relative change
    of consecutive model outputs). Non-finite pairs are dropped."""
    import numpy as np

    x = np.asarray(input_changes, dtype=np.float64)
    y = np.asarray(output_changes, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"input_changes {x.shape} and output_changes {y.shape} must be equal 1-D")
    keep = np.isfinite(x) & np.isfinite(y)
    if keep.sum() <= degree:
        raise ValueError(
            f"need more than degree ({degree}) finite pairs to fit, got {int(keep.sum())}"
        )
    return tuple(float(v) for v in np.polyfit(x[keep], y[keep], degree))
