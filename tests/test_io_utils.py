"""Atomic artefact writing leaves complete files with ordinary permissions."""

import os

from rise_jax.io_utils import write_json_atomic, write_text_atomic


def test_atomic_writes_leave_no_temp_files_and_respect_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_text_atomic(str(tmp_path / "sub" / "a.md"), "hello\n")
        write_json_atomic(str(tmp_path / "sub" / "b.json"), {"x": 1})
    finally:
        os.umask(old)
    assert sorted(os.listdir(tmp_path / "sub")) == ["a.md", "b.json"]
    assert (tmp_path / "sub" / "a.md").read_text() == "hello\n"
    assert os.stat(tmp_path / "sub" / "a.md").st_mode & 0o777 == 0o644
