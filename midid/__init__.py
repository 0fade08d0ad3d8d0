"""midid: a MIDI library daemon for Akai MPC / Force users."""

__version__ = "0.1.0"
