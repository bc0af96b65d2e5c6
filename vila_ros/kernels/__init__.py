"""Compiled CPU kernels (``cpu_kernels.cpp``), what one decode step spends its time in:

- ``w4a16_gemv`` (int4 weights x bf16 activations), ``w4_pack`` (int4 storage format -> the GEMV's layout),
  ``w4_dequantize`` (int4 rows -> bf16 tiles, for prefill's GEMM), ``bf16_gemv``;
- ``decode_attention`` (one new token over a KV cache), ``rms_norm_bf16``, ``silu_mul_bf16``,
  ``rope_cache_attention`` (RoPE, cache write and attention of one bf16 token);
- whole one-token layer steps: ``int4_layer_step`` (bf16 layer, int4 projections), ``f32_layer_step`` (fp32 layer).

They need x86-64 with AVX-512 BF16 and VNNI (Zen 4 and later, Sapphire Rapids and later), a C++ compiler and
ninja; torch's extension loader builds them on first use (about 30 s on 2 cores) into ``TORCH_EXTENSIONS_DIR`` (default
``~/.cache/torch_extensions``) and later processes load the cached build, whichever copy of the source (checkout or
install) they import: the build is keyed by the source's content, not its path. Where any of that is missing everything
runs on aten's kernels instead: same results to rounding, slower. ``VILA_ROS_CPU_KERNELS``: ``auto`` (default),
``off`` (always aten), ``require`` (fail loudly instead of falling back: benchmarks and tests of the kernels).

``python -m vila_ros.kernels`` builds them ahead of time (``make build`` does) and prints what loaded.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import pathlib
import platform
from types import ModuleType
from typing import Iterator

_LOG = logging.getLogger(__name__)
_SOURCE = pathlib.Path(__file__).with_name("cpu_kernels.cpp")
_REQUIRED_CPU_FLAGS = ("avx512f", "avx512bw", "avx512vl", "avx512_bf16", "avx512_vnni", "fma")
_CFLAGS = ["-O3", "-fopenmp", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512bf16", "-mavx512vnni", "-mfma"]
# -fopenmp matters: without it at::parallel_for compiles to a serial loop. The extension's libgomp.so.1 resolves to
# the copy torch already loaded (same soname), so there is one OpenMP thread pool.
_LDFLAGS = ["-fopenmp"]


class KernelsUnavailable(RuntimeError):
    """VILA_ROS_CPU_KERNELS=require and the kernels could not be built or loaded."""


def _mode() -> str:
    mode = os.environ.get("VILA_ROS_CPU_KERNELS", "auto").strip().lower()
    if mode not in ("auto", "off", "require"):
        raise ValueError(f"VILA_ROS_CPU_KERNELS={mode!r}: expected auto, off or require")
    return mode


def _cpu_flags() -> set[str]:
    try:
        text = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def _missing_requirement() -> str | None:
    if platform.machine() not in ("x86_64", "AMD64"):
        return f"{platform.machine()} is not x86-64"
    missing = [flag for flag in _REQUIRED_CPU_FLAGS if flag not in _cpu_flags()]
    if missing:
        return f"this CPU lacks {', '.join(missing)}"
    return None


@functools.lru_cache(maxsize=1)
def _build() -> tuple[ModuleType | None, str | None]:
    missing = _missing_requirement()
    if missing:
        return None, missing
    try:
        import ninja  # the pip package: put its binary where torch's loader looks (PATH)

        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
    except ImportError:
        pass  # a system ninja may still be on PATH
    try:
        from torch.utils.cpp_extension import load

        name, source = _staged_source()
        with _exclusive_build(name):
            # Copies: torch's loader appends its own libraries to the list it is given, and the build's name
            # hashes these flags.
            module = load(name, [str(source)], extra_cflags=list(_CFLAGS), extra_ldflags=list(_LDFLAGS),
                          verbose=False)
    except Exception as error:  # noqa: BLE001 - no compiler, no ninja, a failed build: all mean "use aten"
        last_line = str(error).strip().splitlines()[-1] if str(error).strip() else ""
        return None, f"build failed: {type(error).__name__}: {last_line}"
    return module, None


@contextlib.contextmanager
def _exclusive_build(name: str) -> Iterator[None]:
    """Held while this process builds or loads extension `name`: an OS lock, which the kernel releases however its
    holder ends. torch's own lock is a file whose existence is the lock; a build killed midway (Ctrl-C during the
    first run) leaves it, and every later process would wait on it forever without a word. Under this lock no other
    process of ours is building, so such a file is a leftover, and goes."""
    import fcntl

    from torch.utils import cpp_extension

    where = getattr(cpp_extension, "_get_build_directory", None)  # private: a torch without it just builds
    if where is None:
        yield
        return
    build_directory = pathlib.Path(where(name, verbose=False))
    with open(build_directory.parent / f".{name}.flock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        leftover = build_directory / "lock"
        if leftover.exists():
            _LOG.warning("removing %s, left by a kernel build that was interrupted", leftover)
            leftover.unlink(missing_ok=True)
        yield


def _extensions_root() -> pathlib.Path:
    # torch's own default (~/.cache/torch_extensions), or where TORCH_EXTENSIONS_DIR points.
    return pathlib.Path(os.environ.get("TORCH_EXTENSIONS_DIR") or pathlib.Path.home() / ".cache" / "torch_extensions")


def _staged_source() -> tuple[str, pathlib.Path]:
    """(extension name, source path) that depend only on the source's content and the flags.

    torch's loader rebuilds whenever the ninja file changes, and that names the source by its path: a checkout
    (`make build` runs `python -m vila_ros.kernels` from the source tree) and the installed copy (what
    `perception_node` imports), or two checkouts, would rebuild the same code in turn for ~30-50 s each. A copy
    under a content-addressed path, and a name carrying the same hash, give every process the one build."""
    import hashlib

    code = _SOURCE.read_bytes()
    digest = hashlib.sha256(code + repr((_CFLAGS, _LDFLAGS)).encode()).hexdigest()[:12]
    directory = _extensions_root() / "vila_ros_sources" / digest
    source = directory / _SOURCE.name
    if not source.is_file() or source.read_bytes() != code:
        directory.mkdir(parents=True, exist_ok=True)
        partial = directory / f".{_SOURCE.name}.{os.getpid()}"
        partial.write_bytes(code)
        os.replace(partial, source)  # atomic: a concurrent build never compiles half a file
    return f"vila_ros_cpu_kernels_{digest}", source


def cpu_kernels() -> ModuleType | None:
    """The compiled module, or None (aten fallback) when unavailable or switched off."""
    mode = _mode()
    if mode == "off":
        return None
    module, reason = _build()
    if module is None:
        if mode == "require":
            raise KernelsUnavailable(f"vila_ros CPU kernels unavailable: {reason}")
        _log_once(reason)
    return module


def unavailable_reason() -> str | None:
    """Why ``cpu_kernels()`` is None, or None when it is not."""
    if _mode() == "off":
        return "VILA_ROS_CPU_KERNELS=off"
    return _build()[1]


@functools.lru_cache(maxsize=1)
def _log_once(reason: str | None) -> None:
    _LOG.info("vila_ros CPU kernels unavailable (%s): using aten's", reason)

