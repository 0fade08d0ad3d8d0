"""``analyze_bytes``: one MIDI file's bytes in, an :class:`Analysis` out (pure, no I/O)."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from . import chords as chords_mod
from .category import Evidence, categorize
from .drums import PART_OF_PITCH, drum_parts, looks_like_kit, names_say_drums
from .key import find_key
from .model import Analysis
from .parse import ParsedMidi, parse_midi
from .tempo import estimate_bpm
from .timing import bar_count, tempo_summary, ticks_to_seconds, time_signature

DEFAULT_BPM = 120.0
# Rhythmic role of each drum part in tempo.ROLES[1:] (low, back, high; -1 none); pitched
# notes below E3 play the "low" role (bass lines lock to the kick).
_PART_ROLE = np.array([0, 1, 2, 2, -1, -1], dtype=np.int8)
_LOW_PITCH = 52
_TAG_WORD = re.compile(r"[^a-z0-9#]+")


def analyze_bytes(
    data: bytes, *, filename_bpm: float | None = None, prior_tags: Sequence[str] = ()
) -> Analysis:
    """Analyse one standard MIDI file (RIFF RMID already unwrapped).

    ``filename_bpm`` is used as ``bpm`` when the file has no set-tempo event; ``prior_tags``
    are filename/folder words ("bass", "kick", "loop") that guide, but do not override, the
    category. Raises :class:`AnalysisError` when the bytes hold nothing readable.
    """
    midi = parse_midi(data)
    tags = [t.lower() for t in prior_tags]
    drum = _drum_notes(midi, tags)
    tpq = midi.tpq
    last_tick = int(midi.end.max()) if midi.end.size else 0
    signature = time_signature(midi)
    tempo = tempo_summary(midi, last_tick)

    onset_s = ticks_to_seconds(midi.start, midi)  # one pass over the tempo map
    bpm_estimate = estimate_bpm(
        onset_s, midi.velocity.astype(np.float64) / 127.0, onset_roles(midi.pitch, drum)
    )
    if tempo.bpm is not None:
        bpm, source = tempo.bpm, "meta"
    elif filename_bpm is not None and filename_bpm > 0:
        bpm, source = float(filename_bpm), "filename"
    elif bpm_estimate is not None:
        bpm, source = bpm_estimate, "estimate"
    else:
        bpm, source = DEFAULT_BPM, "default"

    pitched = ~drum
    p_start, p_end, p_pitch = midi.start[pitched], midi.end[pitched], midi.pitch[pitched]
    key = None
    chord_segments: list[tuple[float, str]] = []
    if p_start.size:
        key = find_key(p_pitch, (p_end - p_start) / tpq)
        chord_segments = chords_mod.detect_chords(p_start, p_end, p_pitch, tpq)
    key_tonic = key.tonic if key else None
    key_mode = key.mode if key else None
    parts = drum_parts(midi.pitch[drum])
    bars = bar_count(last_tick / tpq, signature)
    polyphony = _polyphony(midi.start, midi.end)
    pitched_poly = _polyphony(p_start, p_end)
    chord_labels = {label for _, label in chord_segments if label != "N"}
    n_notes = int(midi.start.size)
    drum_share = float(drum.mean()) if n_notes else 0.0
    evidence = Evidence(
        notes=n_notes,
        drum_share=drum_share,
        drum_parts=parts,
        pitched_voices=_voices_with_share(midi.voice[pitched], n_notes),
        polyphony=pitched_poly,
        chord_onset_share=_chord_onset_share(p_start),
        median_pitch=float(np.median(p_pitch)) if p_pitch.size else None,
        bars=bars,
        distinct_chords=len(chord_labels),
        chord_changes_per_bar=(len(chord_segments) - 1) / bars if bars else 0.0,
    )
    category = categorize(evidence, _tag_words(tags))
    voice_ids = np.flatnonzero(np.bincount(midi.voice, minlength=len(midi.voices)))
    return Analysis(
        bpm=round(float(bpm), 2),
        bpm_source=source,
        bpm_estimate=bpm_estimate,
        tempo_changes=tempo.changes,
        time_signature=f"{signature[0]}/{signature[1]}",
        duration_s=round(float(ticks_to_seconds(np.array([last_tick]), midi)[0]), 3),
        bars=bars,
        key_tonic=key_tonic,
        key_mode=key_mode,
        key_confidence=key.confidence if key else None,
        is_drums=drum_share >= 0.5,
        drum_parts=parts,
        chords=[{"beat": beat, "label": label} for beat, label in chord_segments],
        progression=chords_mod.progression(chord_segments, key_tonic, key_mode),
        notes=n_notes,
        tracks=midi.track_count,
        channels=int(voice_ids.size),
        programs=sorted(
            {midi.voices[v].program for v in voice_ids.tolist() if not midi.voices[v].is_drum}
        ),
        pitch_min=int(midi.pitch.min()) if n_notes else None,
        pitch_max=int(midi.pitch.max()) if n_notes else None,
        polyphony=round(polyphony, 3),
        category=category,
        tags=_output_tags(category, parts, drum_share, key_mode, tags),
        parser=midi.parser,
    )


def onset_roles(pitch: np.ndarray, drum: np.ndarray) -> np.ndarray:
    """Per-note index into tempo.ROLES[1:] (-1 for notes without a rhythmic role)."""
    role = np.where(pitch < _LOW_PITCH, 0, -1).astype(np.int8)
    role[drum] = _PART_ROLE[PART_OF_PITCH[pitch[drum]]]
    return role


def _drum_notes(midi: ParsedMidi, tags: Sequence[str]) -> np.ndarray:
    """Per-note drum flag: channel-10 voices plus voices that look like a kit."""
    tagged = names_say_drums(tags)
    is_kit = np.zeros(len(midi.voices), dtype=bool)
    for i, voice in enumerate(midi.voices):
        if voice.is_drum:
            is_kit[i] = True
        else:
            is_kit[i] = looks_like_kit(
                midi.pitch[midi.voice == i], names_say_drums([voice.name]), tagged
            )
    return is_kit[midi.voice] if midi.voice.size else np.zeros(0, dtype=bool)


def _polyphony(start: np.ndarray, end: np.ndarray) -> float:
    """Mean number of notes sounding while at least one sounds (time in ticks): total note
    time over the length of the union of the notes (one sort by onset, skipped when the
    notes already come in order, as a single track's do)."""
    if start.size == 0:
        return 0.0
    if start.size > 1 and (start[1:] < start[:-1]).any():
        order = np.argsort(start, kind="stable")
        start, end = start[order], end[order]
    reach = np.maximum.accumulate(end)
    silent = np.maximum(start[1:] - reach[:-1], 0).sum()
    busy = float(reach[-1] - start[0] - silent)
    return float((end - start).sum()) / busy if busy > 0 else 1.0


def _chord_onset_share(start: np.ndarray) -> float:
    """Share of onset times where three or more pitched notes start together."""
    if start.size == 0:
        return 0.0
    _, counts = np.unique(start, return_counts=True)
    return float((counts >= 3).mean())


def _voices_with_share(voice: np.ndarray, total: int, share: float = 0.1) -> int:
    """Number of voices holding at least ``share`` of all notes."""
    if voice.size == 0:
        return 0
    return int((np.bincount(voice) >= share * total).sum())


def _tag_words(tags: Sequence[str]) -> list[str]:
    return [w for t in tags for w in _TAG_WORD.split(t) if w]


def _output_tags(
    category: str,
    parts: dict[str, float],
    drum_share: float,
    key_mode: str | None,
    prior: Sequence[str],
) -> list[str]:
    """Analysis tags (category, drum parts with >= 10 % of hits, mode) then prior tags."""
    found = [category.lower()]
    if drum_share > 0:
        found += [p for p, s in parts.items() if s >= 0.1]
    if key_mode:
        found.append(key_mode)
    for tag in prior:
        if tag not in found:
            found.append(tag)
    return found
