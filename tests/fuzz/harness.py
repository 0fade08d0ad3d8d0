"""Feed one fuzz input through the pure stages and classify what happened.

The contract under test: `analyze_bytes` returns an Analysis or raises AnalysisError (with a
one-line reason); `split_midi` returns parts or raises SplitError, and every part it returns
is itself a readable SMF. Anything else escaping is a "crash" (a bug, even though the
pipeline's batch runner would still record it as an error). Hangs and native crashes cannot
be seen from inside the process: `tools/fuzz_long.py` watches its workers for those.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from midid.analysis import AnalysisError, analyze_bytes
from midid.smf import SmfError, read_smf
from midid.stages.split import SplitError, split_midi

OK, ERROR, CRASH = "ok", "error", "crash"


@dataclass(frozen=True)
class Outcome:
    """What one stage did with one input.

    `seconds` is CPU time of this process (a hang detector, not a benchmark): wall time on a
    shared two-core machine measures the neighbours as much as the code. The stages are pure
    compute with no I/O, so a stage that spins shows up in CPU time just the same.
    """

    stage: str
    kind: str
    detail: str
    seconds: float


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def check_analyze(data: bytes) -> Outcome:
    start = time.process_time()
    try:
        result = analyze_bytes(data)
    except AnalysisError as exc:
        kind, detail = ERROR, _one_line(exc)
    except Exception as exc:  # noqa: BLE001 - the finding itself
        kind, detail = CRASH, f"{type(exc).__name__}: {_one_line(exc)}"
    else:
        kind, detail = OK, f"{result.category} {result.notes} notes"
    return Outcome("analyze", kind, detail, time.process_time() - start)


def check_split(data: bytes) -> Outcome:
    start = time.process_time()
    try:
        parts = split_midi(data)
        for part in parts:
            read_smf(part.data)
    except SplitError as exc:
        kind, detail = ERROR, _one_line(exc)
    except SmfError as exc:
        kind, detail = CRASH, f"split wrote an unreadable part: {_one_line(exc)}"
    except Exception as exc:  # noqa: BLE001 - the finding itself
        kind, detail = CRASH, f"{type(exc).__name__}: {_one_line(exc)}"
    else:
        kind, detail = OK, f"{len(parts)} parts"
    return Outcome("split", kind, detail, time.process_time() - start)


def check(data: bytes) -> tuple[Outcome, Outcome]:
    """Both pure stages on one input."""
    return check_analyze(data), check_split(data)
