"""The kernels' build is keyed by the source's content: a checkout and an installed copy (or two checkouts) share one
build instead of recompiling in turn (torch's loader rebuilds whenever the source's path in its ninja file changes)."""
import shutil

from vila_ros import kernels


def test_two_copies_of_the_source_stage_to_one_path_and_name(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "extensions"))
    name, staged = kernels._staged_source()
    copy = tmp_path / "elsewhere" / "cpu_kernels.cpp"
    copy.parent.mkdir()
    shutil.copy(kernels._SOURCE, copy)
    monkeypatch.setattr(kernels, "_SOURCE", copy)
    assert kernels._staged_source() == (name, staged)
    assert staged.read_bytes() == copy.read_bytes() and staged.is_relative_to(tmp_path / "extensions")
    copy.write_bytes(copy.read_bytes() + b"\n// changed\n")  # another version of the code: a build of its own
    other_name, other = kernels._staged_source()
    assert other_name != name and other != staged and staged.is_file()


def test_loading_leaves_the_build_name_as_it_was(our_kernels):
    """torch's loader appends to the flag lists it is given; the name hashes the flags, so a process that loaded
    the kernels once would look for another build the next time."""
    name = kernels._staged_source()[0]
    kernels._build.cache_clear()
    assert kernels.cpu_kernels() is not None and kernels._staged_source()[0] == name


def test_a_lock_left_by_an_interrupted_build_does_not_hang_the_next_one(tmp_path, monkeypatch):
    """torch's build lock is a file: a first run killed while compiling leaves it, and the next process would wait
    on it forever. The build runs in a child with a deadline, so that a hang fails here instead of stalling the
    suite."""
    import pathlib
    import subprocess
    import sys

    import pytest
    from torch.utils import cpp_extension

    if kernels._missing_requirement():
        pytest.skip(f"no kernels to build here: {kernels._missing_requirement()}")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "extensions"))
    monkeypatch.setenv("VILA_ROS_CPU_KERNELS", "require")
    name, _ = kernels._staged_source()
    left = pathlib.Path(cpp_extension._get_build_directory(name, verbose=False)) / "lock"
    left.touch()  # what a build killed midway leaves behind
    child = "from vila_ros import kernels; print(kernels.cpu_kernels() is not None)"
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and done.stdout.strip() == "True", done.stderr[-2000:]
    assert not left.exists() and "interrupted" in done.stderr
