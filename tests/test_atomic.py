"""The one atomic-write helper: all or nothing, no temporary file left, no clobbering."""
import pytest

from xrdwidgets.base.atomic import atomic_path, atomic_write_text


def test_a_failed_write_leaves_the_former_file_and_no_temporary(tmp_path):
    f = tmp_path / "a.txt"
    atomic_write_text(f, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(f) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash while writing")
    assert f.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_no_clobbering_unless_overwrite(tmp_path):
    f = tmp_path / "a.txt"
    with pytest.raises(FileExistsError):
        with atomic_path(f, overwrite=False) as tmp:
            tmp.write_text("new")
            f.write_text("appeared meanwhile")
    assert f.read_text() == "appeared meanwhile"
    with pytest.raises(FileExistsError, match="overwrite=True"):
        with atomic_path(f, overwrite=False):
            pass
    with atomic_path(f) as tmp:
        tmp.write_text("replaced")
    assert f.read_text() == "replaced"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_a_folder_replaces_a_folder(tmp_path):
    d = tmp_path / "store.zarr"
    d.mkdir()
    (d / "old").write_text("x")
    with atomic_path(d) as tmp:
        tmp.mkdir()
        (tmp / "new").write_text("y")
    assert [p.name for p in d.iterdir()] == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.zarr"]
