"""Multi-process data parallel under torchrun: gloo on CPU, nccl on CUDA; single-process otherwise.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; without them every helper here answers as the only
process, so the same training code runs unchanged with or without torchrun.
"""
from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed(device: torch.device) -> bool:
    """Join the process group torchrun describes; returns True when running distributed."""
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) <= 1:
        return False
    if dist.is_initialized():
        return True
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend)
    return True


def shutdown_distributed() -> None:
    """Leave the process group. On a normal exit every rank first meets at a barrier, so none tears down
    its gloo connections while a peer is still talking on them (under load that aborted a rank at exit:
    "terminate called without an active exception"). After an error the barrier is skipped: a rank that
    failed must not wait for peers that may never arrive."""
    if dist.is_available() and dist.is_initialized():
        if sys.exc_info()[0] is None:
            dist.barrier()
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """Only rank 0 writes logs and checkpoints."""
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Average a tensor over processes (a copy; the input is untouched)."""
    if not is_distributed():
        return value
    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / world_size()


def all_gather_objects(obj):
    """Gather one picklable object per process into a list (rank order); [obj] when single-process."""
    if not is_distributed():
        return [obj]
    gathered = [None] * world_size()
    dist.all_gather_object(gathered, obj)
    return gathered
