"""Data-parallel training on torch.distributed.

Every rank runs its own envs and a full copy of the networks. Parameters start equal
(broadcast from rank 0) and stay equal because every minibatch's gradients are averaged
over the ranks before the optimizer steps, so each update sees K times the data.

The process group comes from the launcher's environment (``torchrun`` or
``accelerate launch`` set RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT):
gloo on CPU, nccl on CUDA.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist

LAUNCH_HINT = "torchrun --nproc_per_node=2 -m ippo_cli train hardware=distributed ..."


class PeerLostError(RuntimeError):
    """A collective failed because another rank (another node) is gone: one line."""


def _transport_reason(exc: BaseException) -> str:
    """The gist of a backend error: gloo's first line without its source location
    ("[.../pair.cc:537] Read error [127.0.0.1]:37280: Connection reset by peer. This is
    typically caused by ...") -> "Read error [127.0.0.1]:37280: Connection reset by peer"."""
    lines = str(exc).strip().splitlines()
    first = re.sub(r"^\[[^\]]*\.(?:cc|cpp|h):\d+\]\s*", "", lines[0] if lines else "")
    return first.split(". ", 1)[0].rstrip(".") or type(exc).__name__


def collective(fn: Callable) -> Callable:
    """Turn a collective's failure into a :class:`PeerLostError` naming this rank. The
    ranks run the same code on tensors of the same shapes, so a collective fails when the
    transport does: a peer died or its connection closed (gloo raises a bare RuntimeError
    with a page of text, nccl a DistBackendError)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except RuntimeError as exc:
            rank, world = dist.get_rank(), dist.get_world_size()
            raise PeerLostError(
                f"rank {rank} of {world} lost the data-parallel run's other ranks during "
                f"{fn.__name__} ({_transport_reason(exc)}); a node stopped or its network "
                "failed: all ranks must be restarted"
            ) from exc

    return wrapper


@dataclass(frozen=True)
class Context:
    """This process's place in a data-parallel run (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0 alone logs, evaluates and writes checkpoints."""
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.world_size > 1


def launched_rank() -> int | None:
    """The rank given by a launcher's environment, or None outside a launcher."""
    rank = os.environ.get("RANK")
    return int(rank) if rank is not None and "WORLD_SIZE" in os.environ else None


def initialize(device: torch.device) -> Context:
    """Join the process group of a ``torchrun``/``accelerate launch`` run."""
    if launched_rank() is None:
        raise ValueError(
            "hardware.distributed=true needs a launcher that sets RANK and WORLD_SIZE, "
            f"e.g. {LAUNCH_HINT}"
        )
    context = Context(
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
    )
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return context


def rank_device(device: torch.device, context: Context) -> torch.device:
    """One GPU per local rank; CPU stays CPU."""
    if device.type == "cuda" and context.parallel:
        return torch.device("cuda", context.local_rank)
    return device


def active() -> bool:
    """A process group with more than one rank is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@collective
def broadcast_parameters(modules: Iterable[torch.nn.Module]) -> None:
    """Copy rank 0's parameters and buffers to every rank."""
    for module in modules:
        for tensor in (*module.parameters(), *module.buffers()):
            dist.broadcast(tensor.data, src=0)


@collective
def average_gradients(params: list[torch.nn.Parameter]) -> None:
    """Average gradients over the ranks in one all-reduce of a flat buffer."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset : offset + n].view_as(g))
        offset += n


@collective
def average(value: torch.Tensor) -> torch.Tensor:
    """The mean of a tensor over the ranks."""
    out = value.detach().clone()
    dist.all_reduce(out)
    return out / dist.get_world_size()


@collective
def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is True on any rank (a collective stop decision)."""
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
