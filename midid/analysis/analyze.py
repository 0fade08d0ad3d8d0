"""``analyze_bytes``: one MIDI file's bytes in, an :class:`Analysis` out (pure, no I/O)."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
from symusic import Note, Score, Tempo, Track

from . import chords as chords_mod
from .category import DRUM_SHARE, SINGLE_PART_SHARE, Evidence, categorize
from .drums import PART_OF_PITCH, looks_like_kit, names_say_drums, part_shares
from .kernels import note_summary
from .key import find_key
from .model import Analysis
from .parse import ParsedMidi, parse_midi
from .tempo import MAX_SECONDS, MetaGrid, estimate_bpm, on_tick_grid
from .timing import (
    bar_count,
    opening_tempo,
    seconds_at,
    tempo_summary,
    ticks_to_seconds,
    time_signature,
)

DEFAULT_BPM = 120.0  # the MIDI default (500,000 us per quarter), and what a file without a tempo says
STATED_AGREES = 0.04  # an onset estimate this close to a name's stated tempo confirms it
# Rhythmic role of each drum part in tempo.ROLES[1:] (low, back, high; -1 none); pitched
# notes below E3 play the "low" role (bass lines lock to the kick).
_PART_ROLE = np.array([0, 1, 2, 2, -1, -1], dtype=np.int8)
_LOW_PITCH = 52
# Role of a note by (is drum, pitch): one table lookup per note.
_ROLE_OF = np.stack([np.where(np.arange(128) < _LOW_PITCH, 0, -1), _PART_ROLE[PART_OF_PITCH]])
_ROLE_OF = _ROLE_OF.astype(np.int8)
# The pedal hi-hat "chick" keeps the backbeat (2 and 4) under a jazz ride as a snare does in
# rock, so it plays the backbeat role, not the high one of the ride it sits under.
_ROLE_OF[1, 44] = 1
_UNSORTED = np.zeros(0, dtype=np.intp)  # note_summary's "no order given"
_TAG_WORD = re.compile(r"[^a-z0-9#]+")


def analyze_bytes(
    data: bytes, *, filename_bpm: float | None = None, prior_tags: Sequence[str] = (),
    filename_bpm_stated: bool = False, filename_key: tuple[str, str] | None = None,
) -> Analysis:
    """Analyse one standard MIDI file (RIFF RMID already unwrapped).

    ``filename_bpm`` is used as ``bpm`` when the file has no set-tempo event, and picks the
    octave of ``bpm_estimate`` among the relatives the onsets allow; ``prior_tags``
    are filename/folder words ("bass", "kick", "loop") that guide, but do not override, the
    category. Raises :class:`AnalysisError` when the bytes hold nothing readable.

    ``filename_bpm_stated``: the name writes the tempo as one ("Trap 140bpm"), not as a bare
    number. Such a name also beats the file's own tempo when that is the 120 BPM every MIDI
    writer defaults to (a pack exported without setting the tempo) - but only where the notes
    cannot say otherwise: they sit on the tick grid (their timing was written in beats, so
    the 120 never shaped it), or their onsets, read in seconds, agree with the name. A
    performance whose onsets say 120 keeps 120; a bare number ("Loop 95", POP909's "187")
    never overrides a tempo event.

    ``filename_key``: (tonic with sharps, "major"/"minor") a name states, a prior on the key
    (:mod:`.key`): it wins unless the notes make another key far likelier.
    """
    midi = parse_midi(data)
    tags = [t.lower() for t in prior_tags]
    drum = _drum_notes(midi, tags)
    tpq = midi.tpq
    n_notes = int(midi.start.size)
    # Notes of several voices come voice after voice: numpy's stable sort (a merge of sorted
    # runs) orders them in a tenth of the time of the kernel's own; one voice is usually
    # in order already, which the kernel checks for free.
    order = np.argsort(midi.start, kind="stable") if len(midi.voices) > 1 else _UNSORTED
    (first_tick, last_tick, pitch_min, pitch_max, part_hits, per_voice, pitched_per_voice,
     polyphony, pitched_poly, chord_onset_share, median_pitch) = note_summary(
        midi.start, midi.end, midi.pitch, midi.voice, drum, len(midi.voices), PART_OF_PITCH,
        order)
    signature = time_signature(midi, first_tick)
    tempo = tempo_summary(midi, last_tick)

    onset_s = ticks_to_seconds(midi.start, midi)  # one pass over the tempo map
    # One tempo over the onsets the estimate reads: ticks and seconds are one scale apart.
    # Where they end matters only when the tempo map has an event after the first onset.
    opening = None
    if n_notes:
        until = first_tick
        if midi.tempo_ticks.size and midi.tempo_ticks[-1] > first_tick:
            window = onset_s < float(onset_s.min()) + MAX_SECONDS  # what estimate_bpm reads
            until = int(midi.start[window].max(initial=first_tick))
        opening = opening_tempo(midi, first_tick, until)
    hits = part_hits.tolist()
    n_drum = sum(hits)
    bpm_estimate = estimate_bpm(
        onset_s, midi.velocity / 127.0, onset_roles(midi.pitch, drum),
        None if opening is None else MetaGrid(midi.start, tpq, opening),
        hint=filename_bpm,
        # The category's test for one part alone (DrumKicks ...): its own tempo weights.
        single_part=n_drum >= DRUM_SHARE * n_notes and max(hits) >= SINGLE_PART_SHARE * n_drum > 0,
    )
    if tempo.bpm is not None and not (
            filename_bpm_stated and filename_bpm and _placeholder_tempo(tempo.bpm, tempo.changes, filename_bpm)
            and opening is not None
            and (on_tick_grid(onset_s, MetaGrid(midi.start, tpq, opening))
                 or (bpm_estimate is not None and abs(bpm_estimate / filename_bpm - 1) <= STATED_AGREES))):
        bpm, source = tempo.bpm, "meta"
    elif filename_bpm is not None and filename_bpm > 0:
        bpm, source = float(filename_bpm), "filename"
    elif bpm_estimate is not None:
        bpm, source = bpm_estimate, "estimate"
    else:
        bpm, source = DEFAULT_BPM, "default"

    key = None
    chord_segments: list[tuple[float, str]] = []
    if n_drum < n_notes:
        p_start, p_end, p_pitch, p_voice = midi.start, midi.end, midi.pitch, midi.voice
        if n_drum:  # else every note is pitched: no copies
            pitched = ~drum
            p_start, p_end, p_pitch = p_start[pitched], p_end[pitched], p_pitch[pitched]
            p_voice = p_voice[pitched]
        runs = chords_mod.chord_runs(p_start, p_end, p_pitch, tpq, p_voice)
        chord_segments = chords_mod.labelled(runs)
        key = find_key(p_pitch, (p_end - p_start) / tpq,
                       chords_mod.root_profiles(runs, last_tick / tpq), filename_key)
    key_tonic = key.tonic if key else None
    key_mode = key.mode if key else None
    parts = part_shares(part_hits)
    bars = bar_count(last_tick / tpq, signature)
    chord_labels = {label for _, label in chord_segments if label != "N"}
    drum_share = n_drum / n_notes if n_notes else 0.0
    evidence = Evidence(
        notes=n_notes,
        drum_share=drum_share,
        drum_parts=parts,
        pitched_voices=int(np.count_nonzero(pitched_per_voice >= 0.1 * n_notes)),
        polyphony=pitched_poly,
        chord_onset_share=chord_onset_share,
        median_pitch=median_pitch if median_pitch >= 0 else None,
        bars=bars,
        distinct_chords=len(chord_labels),
        chord_changes_per_bar=(len(chord_segments) - 1) / bars if bars else 0.0,
    )
    category = categorize(evidence, _tag_words(tags))
    sounding = [v for v, count in zip(midi.voices, per_voice.tolist()) if count]
    return Analysis(
        bpm=round(float(bpm), 2),
        bpm_source=source,
        bpm_estimate=bpm_estimate,
        tempo_changes=tempo.changes,
        time_signature=f"{signature[0]}/{signature[1]}",
        duration_s=round(seconds_at(last_tick, midi), 3),
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
        channels=len(sounding),
        programs=sorted({v.program for v in sounding if not v.is_drum}),
        pitch_min=int(pitch_min) if n_notes else None,
        pitch_max=int(pitch_max) if n_notes else None,
        polyphony=round(polyphony, 3),
        category=category,
        tags=_output_tags(category, parts, drum_share, key_mode, tags),
        parser=midi.parser,
    )


def warm_up() -> None:
    """Compile (first process on a machine: seconds) or load from numba's cache (well under
    a second) every analysis kernel, by analysing two small made-up files: a quantised
    chord-and-drum loop (the tempo-map shortcut) and an unquantised one with a tempo change
    (the full tempo scan). Call it where a process starts work - a pool worker - so that its
    first real file is not the one that pays."""
    tpq = 96
    for offset in (0, 7):  # on the tick grid, then 7 ticks off it
        score = Score(tpq)
        score.tempos.append(Tempo(0, 110.0))
        if offset:
            score.tempos.append(Tempo(16 * tpq, 112.0))
        drums, keys = Track("drums", 0, True), Track("keys", 0, False)
        for beat in range(32):
            at = beat * tpq + (offset * (beat % 3) if beat % 2 else 0)
            drums.notes.append(Note(at, tpq // 4, 36 if beat % 2 == 0 else 38, 100))
            for pitch in (48, 60, 64, 67):
                keys.notes.append(Note(at, tpq, pitch + 2 * (beat // 8), 80))
        score.tracks.extend([drums, keys])
        analyze_bytes(score.dumps_midi())


def _placeholder_tempo(bpm: float, changes: int, stated: float) -> bool:
    """The file's one tempo is the MIDI default and a name states another."""
    return bpm == DEFAULT_BPM and changes == 0 and abs(stated / DEFAULT_BPM - 1) > 0.01


def onset_roles(pitch: np.ndarray, drum: np.ndarray) -> np.ndarray:
    """Per-note index into tempo.ROLES[1:] (-1 for notes without a rhythmic role)."""
    return _ROLE_OF[drum.view(np.uint8), pitch]


def _drum_notes(midi: ParsedMidi, tags: Sequence[str]) -> np.ndarray:
    """Per-note drum flag: channel-10 voices plus voices that look like a kit."""
    tagged = names_say_drums(tags)
    one = len(midi.voices) == 1  # a loop, a split part: its notes are the voice's, no masks
    is_kit = [voice.is_drum or looks_like_kit(midi.pitch if one else midi.pitch[midi.voice == i],
                                              names_say_drums([voice.name]), tagged)
              for i, voice in enumerate(midi.voices)]
    if one:
        return np.full(midi.voice.size, is_kit[0], dtype=bool)
    return np.array(is_kit, dtype=bool)[midi.voice] if midi.voice.size else np.zeros(0, dtype=bool)


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
