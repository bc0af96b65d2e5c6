"""CPU tensors on transparent huge pages (vila_ros.kernels.huge_pages): real mappings, checked in /proc."""
import gc
import pathlib

import pytest
import torch

from vila_ros.kernels import huge_pages


def _thp_mode() -> str:
    try:
        text = pathlib.Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return "unavailable"
    return text.split("[", 1)[1].split("]", 1)[0]


def _huge_kib_backing(tensor: torch.Tensor) -> int:
    """AnonHugePages of the mapping that holds ``tensor`` (from /proc/self/smaps)."""
    address = tensor.data_ptr()
    inside = False
    for line in pathlib.Path("/proc/self/smaps").read_text().splitlines():
        first = line.split()[0]
        if "-" in first and all(c in "0123456789abcdef-" for c in first):
            start, end = (int(v, 16) for v in first.split("-"))
            inside = start <= address < end
        elif inside and line.startswith("AnonHugePages:"):
            return int(line.split()[1])
    return 0


def test_a_big_tensor_is_aligned_copied_and_backed_by_huge_pages_where_the_kernel_allows():
    source = torch.arange(3 * (1 << 20), dtype=torch.int32).view(3, -1)  # 12 MiB
    copy = huge_pages.copy_of(source)
    assert torch.equal(copy, source) and copy.is_contiguous() and copy.data_ptr() != source.data_ptr()
    assert copy.data_ptr() % huge_pages.HUGE_PAGE_BYTES == 0
    if _thp_mode() in ("always", "madvise"):
        assert _huge_kib_backing(copy) >= 4096  # at least two of its 2 MiB pages
    else:
        pytest.skip(f"transparent huge pages are {_thp_mode()} here: alignment and contents checked only")


def test_small_tensors_stay_ordinary_and_memory_goes_back_when_freed():
    small = huge_pages.empty((16, 16), torch.bfloat16)
    assert small.shape == (16, 16) and small.dtype == torch.bfloat16
    big = huge_pages.empty((64, 1 << 20), torch.float32)  # 256 MiB
    view = big[10:12]
    view.fill_(2.0)
    del big
    gc.collect()
    assert float(view.sum()) == 2.0 * 2 * (1 << 20)  # a view keeps the mapping alive

    def mapped(address: int) -> bool:
        for line in pathlib.Path("/proc/self/maps").read_text().splitlines():
            start, end = (int(v, 16) for v in line.split()[0].split("-"))
            if start <= address < end:
                return True
        return False

    address = view.data_ptr()
    assert mapped(address)
    del view
    gc.collect()
    assert not mapped(address)
