"""Musical analysis of MIDI bytes: tempo, key, drums, chords and MPC category (pure code)."""

from .analyze import analyze_bytes, warm_up
from .model import Analysis, AnalysisError

__all__ = ["Analysis", "AnalysisError", "analyze_bytes", "warm_up"]
