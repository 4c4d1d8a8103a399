"""Atomic writes and the clean-up of what a killed writer leaves."""

from __future__ import annotations

import json
import os

import pytest

from benchmark.io import (
    atomic_write,
    atomic_write_dir,
    atomic_write_json,
    is_temp,
    is_temp_of,
    make_temp_dir,
    read_json,
    remove_stale_temps,
)


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
    leftovers = [tmp_path / ".model.pt.abc12_yz.tmp", tmp_path / ".model.pt.k2j3m4n5.tmp"]
    for p in leftovers:
        p.write_text("half")
    (tmp_path / ".model.pt.q1w2e3r4.tmp").mkdir()  # a half-built folder of the same name
    kept = [
        tmp_path / ".checkpoint.pt.abc12_yz.tmp",  # another file's temporary
        tmp_path / ".model.pt.swp",  # an editor's swap file
        tmp_path / ".model.pt.notes",
        tmp_path / ".model.abc12_yz.tmp",  # the temporary of a file called "model"
        tmp_path / ".model.pt.tooshort.tmp2",
    ]
    for p in kept:
        p.write_text("keep")
    removed = remove_stale_temps(target)
    assert removed == sorted([*leftovers, tmp_path / ".model.pt.q1w2e3r4.tmp"])
    assert target.read_text() == "new" and all(p.exists() for p in kept)
    assert remove_stale_temps(tmp_path / "model") == [tmp_path / ".model.abc12_yz.tmp"]


def test_the_names_atomic_writes_make_are_the_names_cleaned_up(tmp_path, monkeypatch):
    """Whatever a killed writer leaves, the clean-up recognises: made by the real helpers."""
    seen = []
    original = os.replace

    def spy(src, dst):
        seen.append(os.path.basename(src))
        return original(src, dst)

    renamed = []
    original_rename = os.rename

    def spy_rename(src, dst):
        renamed.append((os.path.basename(src), os.path.basename(dst)))
        return original_rename(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    monkeypatch.setattr(os, "rename", spy_rename)
    atomic_write_json(tmp_path / "metrics.json", [1])
    plots = atomic_write_dir(tmp_path / "plots", lambda d: (d / "a.png").write_text("x"))
    atomic_write_dir(plots, lambda d: (d / "a.png").write_text("y"))  # replaces: the old one is moved aside
    (new, _), (old_target, moved_aside), (new_again, _) = renamed
    assert is_temp_of(seen[0], "metrics.json") and is_temp(seen[0]) and not is_temp("metrics.json")
    assert is_temp_of(new, "plots") and is_temp_of(new_again, "plots") and old_target == "plots"
    assert is_temp_of(moved_aside, "plots") and moved_aside.endswith(".old")


def test_writes_are_flushed_before_they_are_published(tmp_path, monkeypatch):
    """fsync of the bytes comes before the rename that publishes them (file and folder)."""
    events = []
    real_fsync, real_replace, real_rename = os.fsync, os.replace, os.rename
    monkeypatch.setattr(os, "fsync", lambda fd: events.append("fsync") or real_fsync(fd))
    monkeypatch.setattr(os, "replace", lambda a, b: events.append("replace") or real_replace(a, b))
    monkeypatch.setattr(os, "rename", lambda a, b: events.append("rename") or real_rename(a, b))
    atomic_write_json(tmp_path / "a.json", {"x": 1})
    assert events[:2] == ["fsync", "replace"]
    events.clear()
    atomic_write_dir(tmp_path / "plots", lambda d: [(d / n).write_text(n) for n in ("a", "b")])
    assert events.index("rename") > 2 and events[:3] == ["fsync", "fsync", "fsync"]  # 2 files, then the folder


def test_a_folder_caught_between_the_two_renames_is_put_back(tmp_path):
    """replace_dir renames the old folder to <temp>.old, then the new one into place; a kill
    between the two leaves no folder: the next run's clean-up restores the old one."""
    plots = atomic_write_dir(tmp_path / "plots", lambda d: (d / "a.png").write_text("old"))
    new = make_temp_dir(plots)  # the new folder, not yet renamed
    os.rename(plots, new.with_name(new.name + ".old"))
    remove_stale_temps(plots)
    assert (plots / "a.png").read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["plots"]


def test_names_with_pattern_characters_are_taken_literally(tmp_path):
    (tmp_path / ".a[1].b.abcdefgh.tmp").write_text("x")
    (tmp_path / ".a1xb.abcdefgh.tmp").write_text("y")  # would match if "[1]" or "." were patterns
    assert remove_stale_temps(tmp_path / "a[1].b") == [tmp_path / ".a[1].b.abcdefgh.tmp"]
    assert remove_stale_temps(tmp_path / "a1.b") == [] and (tmp_path / ".a1xb.abcdefgh.tmp").exists()
