"""The benchmarks' generated inputs still fit the schema: `benchmarks/find.py`'s million-file
library generator had failed since schema 3 added columns, and nothing noticed. Only the
generators run here (small); the timings stay in benchmarks/."""

from __future__ import annotations

import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from find import generate  # noqa: E402

from midid.db import Library  # noqa: E402
from midid.records import ANALYZER_VERSION  # noqa: E402
from midid.search import FindQuery, find  # noqa: E402


def test_the_find_benchmark_library_is_a_current_library_that_find_can_search(tmp_path: Path) -> None:
    path = tmp_path / "generated.sqlite3"
    generate(path, 3000)
    lib = Library(path, readonly=True)
    assert lib.db.execute("SELECT count(*) FROM files").fetchone()[0] == 3000
    stale = lib.db.execute("SELECT count(*) FROM analysis WHERE analyzer != ?", [ANALYZER_VERSION]).fetchone()[0]
    assert stale == 0  # else every generated row would count as waiting for analysis again
    assert len(find(lib, FindQuery(category="Bass", limit=10))) == 10
    assert find(lib, FindQuery(key="Am", limit=5)) and find(lib, FindQuery(text="funk", limit=5))
