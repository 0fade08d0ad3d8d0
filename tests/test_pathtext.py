"""Non-UTF-8 file names as stored text and back (midid/pathtext.py), on real files: the end-to-end
cases (an import, a watched folder's moves and deletes of a Latin-1 name) are in test_import and
test_daemon; these pin each function's own contract."""

from __future__ import annotations

import os
from pathlib import Path

from midid.pathtext import disk_path, path_text, readable


def test_a_latin_1_name_is_stored_as_escapes_and_found_again(tmp_path: Path) -> None:
    raw = os.fsencode(tmp_path) + b"/Caf\xe9/m\xe9lodie \xff.mid"
    os.makedirs(os.path.dirname(raw))
    with open(raw, "wb") as f:
        f.write(b"MThd")
    real = os.fsdecode(raw)
    text = path_text(real)
    assert text == f"{tmp_path}/Caf\\xe9/m\\xe9lodie \\xff.mid"
    text.encode("utf-8")  # what a database column, a terminal and JSON accept
    assert disk_path(text) == real and Path(disk_path(text)).read_bytes() == b"MThd"
    assert readable(text) == f"{tmp_path}/Café/mélodie ÿ.mid"


def test_valid_names_and_literal_escapes_are_left_alone(tmp_path: Path) -> None:
    plain = tmp_path / "Trap Pack" / "Hats 140 ½.mid"
    assert path_text(plain) == str(plain) and disk_path(str(plain)) == str(plain)
    literal = tmp_path / "odd \\x41 name.mid"  # the four characters \x41, not a byte
    literal.write_bytes(b"")
    assert disk_path(str(literal)) == str(literal)  # it exists as written: not read back as "A"
    assert disk_path(str(tmp_path / "gone \\x41.mid")) == str(tmp_path / "gone A.mid")
    assert readable("Loop \\x41.mid") == "Loop \\x41.mid"  # below 0x80 is never one path_text wrote
