"""Regional compile, bf16 autocast and gradient checkpointing for any repeated block stack.

- :func:`compile_blocks` ("regional compilation"): ``torch.compile`` each *repeated block*
  instead of the whole model. The blocks of a stack share one class and one ``forward``, so
  TorchDynamo traces that forward once and every other block reuses the graph (parameters
  are graph inputs: PyTorch's default ``inline_inbuilt_nn_modules``); compile time is one
  block's, not the depth's, and the glue around the blocks (embeddings, caches, samplers)
  stays eager and free to change without recompiling. Each block is compiled *in place*
  with ``nn.Module.compile``, so the module tree, the ``state_dict`` keys and hooks such as
  :mod:`avblocks.dit.cache` are untouched. Which stacks: every ``nn.ModuleList`` /
  ``nn.Sequential`` of two or more children of the same class (or the attribute names
  given). Defaults ``fullgraph=True`` (a graph break is an error, not a silent slowdown;
  the shape checks step aside under compile) and ``dynamic=False`` (a new token count
  compiles a new graph rather than a slower dynamic one; sampling keeps shapes fixed).
  Inductor's ``freezing`` (weights folded into the graph as constants) cannot share one
  graph between blocks, so it is refused here: compile the whole model for it (on the CPU,
  ``benchmarks/matmul_ceiling.py --freezing`` measures what it gains).
- :func:`bf16_autocast`: ``torch.autocast`` to bfloat16 on the given device (CPU or CUDA):
  matmuls and attention run in bf16, reductions and norms in float32 (autocast's op lists).
- :func:`checkpoint_blocks`: gradient checkpointing for every block of every repeated stack
  (the same stacks as :func:`compile_blocks`) of a model that has no switch of its own: each
  block's ``forward`` is recomputed in the backward (``torch.utils.checkpoint``,
  non-reentrant) whenever gradients are enabled, identical outputs and gradients.
  :func:`uncheckpoint_blocks` undoes it. (:class:`~avblocks.dit.stdit.STDiT` has its own
  ``gradient_checkpointing`` flag; this is for the stacks that do not, e.g. the MDSA
  encoder/decoder blocks and the fusion stages.)
"""

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = [
    "repeated_blocks",
    "compile_blocks",
    "bf16_autocast",
    "checkpoint_blocks",
    "uncheckpoint_blocks",
]


def repeated_blocks(
    model: nn.Module, names: Sequence[str] | None = None
) -> list[tuple[str, nn.Module]]:
    """``(qualified name, block)`` of every block in a repeated stack of ``model``.

    Without ``names``: the children of every ``nn.ModuleList`` / ``nn.Sequential`` with at
    least two children, all of one class (outermost stacks only: blocks inside a found block
    are not listed again). With ``names``: the children of those attributes (dotted paths,
    e.g. ``["blocks"]``), which must be ModuleLists / Sequentials.
    """
    found: list[tuple[str, nn.Module]] = []
    if names is not None:
        for name in names:
            stack = model.get_submodule(name)
            if not isinstance(stack, (nn.ModuleList, nn.Sequential)):
                raise ValueError(
                    f"{name} is a {type(stack).__name__}, not a ModuleList / Sequential of blocks"
                )
            found += [(f"{name}.{i}", block) for i, block in enumerate(stack)]
        return found
    taken: set[int] = set()
    for name, module in model.named_modules():
        if id(module) in taken or not isinstance(module, (nn.ModuleList, nn.Sequential)):
            continue
        children = list(module.children())
        if len(children) >= 2 and len({type(c) for c in children}) == 1:
            for i, child in enumerate(children):
                found.append((f"{name}.{i}" if name else str(i), child))
                taken.update(id(m) for m in child.modules())
    return found


def compile_blocks(
    model: nn.Module,
    *,
    names: Sequence[str] | None = None,
    fullgraph: bool = True,
    dynamic: bool | None = False,
    mode: str | None = None,
    backend: str = "inductor",
) -> nn.Module:
    """Compile each repeated block of ``model`` in place (see module docstring); returns it.

    Args: ``names`` (stacks to compile; default: every repeated stack), ``fullgraph``,
    ``dynamic``, ``mode``, ``backend`` (passed to ``torch.compile``). Raises ``ValueError``
    when there is no repeated stack to compile or when inductor's ``freezing`` is on.
    """
    import torch._inductor.config as inductor_config

    if backend == "inductor" and inductor_config.freezing:
        raise ValueError(
            "torch._inductor.config.freezing is on: it folds each block's weights into its "
            "graph, so the blocks cannot share one graph (every block recompiles until "
            "dynamo's recompile limit stops it); compile the whole model with torch.compile "
            "instead, or turn freezing off for regional compile"
        )
    blocks = repeated_blocks(model, names)
    if not blocks:
        raise ValueError(
            f"{type(model).__name__} has no repeated block stack (a ModuleList / Sequential "
            "of >= 2 modules of one class); name the stacks with names=[...]"
        )
    for _, block in blocks:
        block.compile(fullgraph=fullgraph, dynamic=dynamic, mode=mode, backend=backend)
    return model


@contextlib.contextmanager
def bf16_autocast(device: torch.device | str = "cpu", enabled: bool = True) -> Iterator[None]:
    """``torch.autocast(device_type, dtype=torch.bfloat16)``; ``enabled=False`` is a no-op."""
    device_type = torch.device(device).type
    with torch.autocast(device_type=device_type, dtype=torch.bfloat16, enabled=enabled):
        yield


class _Checkpointed:
    """A block's forward, recomputed in the backward when gradients are on."""

    def __init__(self, forward):
        self.forward = forward

    def __call__(self, *args, **kwargs):
        if torch.is_grad_enabled():
            return checkpoint(self.forward, *args, use_reentrant=False, **kwargs)
        return self.forward(*args, **kwargs)


def checkpoint_blocks(model: nn.Module, names: Sequence[str] | None = None) -> int:
    """Gradient checkpointing for every repeated block of ``model`` (see module docstring).

    Replaces each block instance's ``forward`` (the module tree and ``state_dict`` are
    unchanged); returns how many blocks were wrapped. Idempotent.
    """
    count = 0
    for _, block in repeated_blocks(model, names):
        if not isinstance(vars(block).get("forward"), _Checkpointed):
            block.forward = _Checkpointed(block.forward)
        count += 1
    return count


def uncheckpoint_blocks(model: nn.Module) -> int:
    """Undo :func:`checkpoint_blocks` on every block of ``model``; returns how many."""
    count = 0
    for block in model.modules():
        if isinstance(vars(block).get("forward"), _Checkpointed):
            del block.forward
            count += 1
    return count
