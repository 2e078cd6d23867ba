"""Database file permissions: the file holds OAuth tokens."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from syncd.store import Store
from syncd.store.sqlite import database_mode_problem


async def test_new_database_files_are_private(tmp_path: Path) -> None:
    """A database Store.open creates is mode 0640 (no world access), and so are the -wal and -shm SQLite adds."""
    path = tmp_path / "new" / "syncd.db"
    store = await Store.open(path)
    try:
        files = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
        assert {f.name: stat.S_IMODE(os.stat(f).st_mode) for f in files} == {
            f.name: 0o640 for f in files
        }
        assert database_mode_problem(path) is None
    finally:
        await store.aclose()


async def test_existing_database_mode_is_kept_and_other_read_is_reported(db_path: Path) -> None:
    """An existing file's mode is left alone; readable by others, it is reported (file and -wal),
    group read is not."""
    assert database_mode_problem(db_path) is None  # no file yet: nothing to warn about
    await (await Store.open(db_path)).aclose()
    os.chmod(db_path, 0o644)
    store = await Store.open(db_path)
    try:
        assert stat.S_IMODE(os.stat(db_path).st_mode) == 0o644
        problem = database_mode_problem(db_path)
        assert problem is not None
        assert f"{db_path} (mode 0644)" in problem
        assert f"{db_path}-wal (mode 0644)" in problem  # SQLite copies the database's mode
        for file in (db_path, Path(f"{db_path}-wal"), Path(f"{db_path}-shm")):
            os.chmod(file, 0o640)
        assert database_mode_problem(db_path) is None
    finally:
        await store.aclose()
