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
