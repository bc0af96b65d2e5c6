"""CPU tensors on transparent huge pages, for what decode streams every token (weights, bandwidth probes).

Why: in a virtual machine (the 2-core Firecracker guest of our benchmarks) a buffer on 4 KiB pages streams at
18-27 GB/s depending on the buffer (the same buffer keeps its speed within a process; the guest's page walks cost
what the host's mapping makes them cost), one on
2 MiB pages at the top of that range every time; int4 decode GEMVs over the same weights ran 1.3x faster on huge
pages (3b shapes, 2 threads, interleaved in one process). torch's allocator only asks for huge pages with
THP_MEM_ALLOC_ENABLE=1 read at its first allocation, so these tensors come from their own private anonymous mapping,
2 MiB-aligned and advised MADV_HUGEPAGE before any page is touched (the kernel's "madvise" THP mode, the common
default, honours that; "never" and other systems get ordinary pages, same results).
"""
from __future__ import annotations

import math
import mmap
import sys

import torch

HUGE_PAGE_BYTES = 2 << 20


def _supported() -> bool:
    return sys.platform.startswith("linux") and hasattr(mmap, "MADV_HUGEPAGE")


def empty(shape: tuple[int, ...] | torch.Size, dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised contiguous CPU tensor, on huge pages where it is at least one huge page big and the OS
    supports it (else ``torch.empty``). Its memory goes back to the OS when the tensor is freed."""
    nbytes = math.prod(shape) * torch.empty(0, dtype=dtype).element_size()
    if nbytes < HUGE_PAGE_BYTES or not _supported():
        return torch.empty(shape, dtype=dtype)
    mapping = mmap.mmap(-1, nbytes + HUGE_PAGE_BYTES, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    mapping.madvise(mmap.MADV_HUGEPAGE)
    whole = torch.frombuffer(mapping, dtype=torch.uint8)  # keeps `mapping` alive as long as any view of it
    start = -whole.data_ptr() % HUGE_PAGE_BYTES
    return whole[start:start + nbytes].view(dtype).view(shape)


def copy_of(tensor: torch.Tensor) -> torch.Tensor:
    """A contiguous copy of a CPU tensor on huge pages (see ``empty``)."""
    out = empty(tensor.shape, tensor.dtype)
    out.copy_(tensor)
    return out
