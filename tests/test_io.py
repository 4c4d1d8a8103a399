"""Atomic writes and the clean-up of what a killed writer leaves."""

from __future__ import annotations

import json
import os

import pytest

from benchmark.io import atomic_write, atomic_write_dir, atomic_write_json, read_json, remove_stale_temps


def test_a_failing_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = atomic_write_json(tmp_path / "metrics.json", {"miou": 1.0})

    def half_then_fail(tmp):
        tmp.write_text('{"miou": 2')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, half_then_fail)
    assert read_json(path) == {"miou": 1.0}
    assert os.listdir(tmp_path) == ["metrics.json"]


def test_written_files_get_the_umask_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        path = atomic_write_json(tmp_path / "a.json", [1])
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644
    assert json.loads(path.read_text()) == [1]


def test_remove_stale_temps_removes_only_the_leftovers_of_that_file(tmp_path):
    target = tmp_path / "model.pt"
    target.write_text("new")
    leftovers = [tmp_path / ".model.pt.abc123.tmp", tmp_path / ".model.pt.x.tmp"]
    for p in leftovers:
        p.write_text("half")
    other = tmp_path / ".checkpoint.pt.abc.tmp"
    other.write_text("someone else's")
    (tmp_path / ".model.pt.dir").mkdir()
    removed = remove_stale_temps(target)
    assert sorted(removed) == sorted([*leftovers, tmp_path / ".model.pt.dir"])
    assert target.read_text() == "new" and other.exists()


def test_remove_stale_temps_takes_glob_characters_literally(tmp_path):
    (tmp_path / ".a[1].txt.q.tmp").write_text("x")
    (tmp_path / ".a1.txt.q.tmp").write_text("y")
    assert remove_stale_temps(tmp_path / "a[1].txt") == [tmp_path / ".a[1].txt.q.tmp"]
    assert (tmp_path / ".a1.txt.q.tmp").exists()


def test_a_folder_caught_between_the_two_renames_is_put_back(tmp_path):
    """replace_dir renames the old folder to .<name>.<random>.old, then the new one into place; a
    kill between the two leaves no folder: the next run's clean-up restores the old one."""
    plots = atomic_write_dir(tmp_path / "plots", lambda d: (d / "a.png").write_text("old"))
    os.rename(plots, tmp_path / ".plots.k2j3.old")
    (tmp_path / ".plots.n3w").mkdir()  # the new folder, not yet renamed
    remove_stale_temps(plots)
    assert (plots / "a.png").read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["plots"]
