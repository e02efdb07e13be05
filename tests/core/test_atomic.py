import json
import os
import stat

import pytest

from nbhelpers.atomic import atomic_open, write_json_atomic


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "report.json"
    write_json_atomic(target, {"run": 1})
    with pytest.raises(RuntimeError):
        with atomic_open(target, "w") as file:
            file.write('{"run": 2, "half')
            raise RuntimeError("killed mid-write")
    assert json.loads(target.read_text()) == {"run": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_new_files_get_the_umask_permissions_not_mkstemps_private_ones(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    path = write_json_atomic(tmp_path / "sub" / "figures.json", {"a": 1.5, "b": tmp_path})
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask != 0o600
    assert json.loads(path.read_text()) == {"a": 1.5, "b": str(tmp_path)}


def test_only_whole_file_modes_are_accepted(tmp_path):
    with pytest.raises(ValueError, match="mode must be 'w' or 'wb'"):
        with atomic_open(tmp_path / "x.txt", "a"):
            pass


def test_a_cache_folder_built_twice_at_once_keeps_the_first_and_replace_mode_swaps(tmp_path):
    from nbhelpers.atomic import atomic_folder

    target = tmp_path / "tiny-model"
    with atomic_folder(target, keep_existing=True) as slow:  # a second process finishes first, meanwhile
        (slow / "weights").write_text("second")
        with atomic_folder(target, keep_existing=True) as fast:
            (fast / "weights").write_text("first")
        held_open = (target / "weights").open()  # a reader already using the first copy
    assert (target / "weights").read_text() == "first" and held_open.read() == "first"
    held_open.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-model"]  # no staging folder left behind
    with atomic_folder(target) as newer:  # the default replaces (checkpoints, trained weights)
        (newer / "weights").write_text("newer")
    assert (target / "weights").read_text() == "newer"
