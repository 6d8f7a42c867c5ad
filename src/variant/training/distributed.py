"""Processes: torchrun or srun ranks, and the gradient all-reduce.

A global batch of G = world x micro x accumulation samples is cut into world x accum
micro-batches in a fixed order; gradients are averaged by an explicit bucketed all-reduce
after accumulation (gloo on CPU, nccl on GPU), so 2 processes x 1 micro-batch equal
1 process x 2 accumulated micro-batches.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "cpu") -> DistInfo:
    """torchrun (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) or srun (SLURM_PROCID,
    SLURM_NTASKS, SLURM_LOCALID; MASTER_ADDR defaults to localhost on one node)."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
        local = int(env.get("LOCAL_RANK", rank))
    elif int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:
        rank, world = int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"])
        local = int(env.get("SLURM_LOCALID", 0))
        if "MASTER_ADDR" not in env:
            if int(env.get("SLURM_NNODES", "1")) > 1:
                raise ValueError("multi-node srun: set MASTER_ADDR (and MASTER_PORT) to the first node")
            env["MASTER_ADDR"] = "127.0.0.1"
        env.setdefault("MASTER_PORT", str(20000 + int(env.get("SLURM_JOB_ID", "0")) % 20000))
    else:
        rank, world, local = 0, 1, 0
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: CUDA is not available on this machine")
        dev = torch.device("cuda", local if device == "cuda" else torch.device(device).index)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device(device)
    owns = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", init_method="env://",
                                rank=rank, world_size=world)
        owns = True
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    if world > 1:   # one line per process, so a job's log shows that every rank started
        # one write with its newline: the ranks share the log, and print's separate write of
        # the newline (unbuffered output) let two ranks' lines run together
        sys.stdout.write(f"rank {rank}/{world} (local {local}) on {os.uname().nodename}: "
                         f"{dist.get_backend()} process group, device {dev}\n")
        sys.stdout.flush()
    return DistInfo(rank, world, local, dev, owns)


def barrier(info: DistInfo) -> None:
    """Wait for every process (nothing to wait for in a single one)."""
    if info.world > 1:
        dist.barrier()


def allreduce_mean_(tensors: list[torch.Tensor], world: int, bucket_elems: int = 1 << 25):
    """Average `tensors` over the processes in place, in flat buckets."""
    if world == 1 or not tensors:
        return
    bucket, size = [], 0
    for t in tensors + [None]:
        if t is not None:
            bucket.append(t)
            size += t.numel()
        if bucket and (t is None or size >= bucket_elems):
            flat = torch.cat([b.reshape(-1) for b in bucket])
            dist.all_reduce(flat)
            flat.div_(world)
            for b, piece in zip(bucket, flat.split([b.numel() for b in bucket])):
                b.copy_(piece.view_as(b))
            bucket, size = [], 0
