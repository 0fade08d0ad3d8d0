"""Pad Perform .progression files from a MIDI file's real voicings, and back."""

from __future__ import annotations

import io
import json
from pathlib import Path

import mido
import pytest

from midid.export.progression import (
    MAX_PADS,
    Voicing,
    chord_name,
    chord_voicings,
    parse_progression,
    progression_document,
)

TPQ = 480
# Am-F-C-G twice, one bar each; the second Am is voiced differently: the first wins.
BLOCKS = [
    ("A:min", "Am", (57, 60, 64)),
    ("F:maj", "F", (57, 60, 65)),
    ("C:maj", "C", (55, 60, 64)),
    ("G:maj", "G", (55, 59, 62)),
    ("A:min", "Am", (64, 69, 72)),
    ("F:maj", "F", (57, 60, 65)),
    ("C:maj", "C", (55, 60, 64)),
    ("G:maj", "G", (55, 59, 62)),
]
CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"


def _block_chord_file() -> bytes:
    """Type-1 SMF: tempo track, a chord track (block chords, one per bar, slightly detached),
    a melody track with one non-chord tone per bar, and a GM drum track on channel 10."""
    mid = mido.MidiFile(type=1, ticks_per_beat=TPQ)
    meta = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=500000, time=0)])
    chords, melody, drums = mido.MidiTrack(), mido.MidiTrack(), mido.MidiTrack()
    bar = 4 * TPQ
    gap = 0
    for _, _, notes in BLOCKS:
        for i, n in enumerate(notes):
            chords.append(mido.Message("note_on", note=n, velocity=90, time=gap if i == 0 else 0))
        for i, n in enumerate(notes):
            chords.append(mido.Message("note_off", note=n, time=bar - 10 if i == 0 else 0))
        gap = 10
        # B is in none of Am, F, C; under G (where B is the third) play A#, also foreign.
        passing = 70 if 59 in notes else 71
        melody.append(mido.Message("note_on", channel=1, note=passing, velocity=80, time=0))
        melody.append(mido.Message("note_off", channel=1, note=passing, time=bar))
        for _ in range(4):
            drums.append(mido.Message("note_on", channel=9, note=36, velocity=100, time=0))
            drums.append(mido.Message("note_off", channel=9, note=36, time=TPQ))
    mid.tracks.extend([meta, chords, melody, drums])
    buf = io.BytesIO()
    mid.save(file=buf)
    return buf.getvalue()


def _segments() -> list[dict]:
    return [{"beat": 4.0 * i, "label": label} for i, (label, _, _) in enumerate(BLOCKS)]


def test_voicings_are_the_notes_played_in_first_appearance_order():
    voicings = chord_voicings(_block_chord_file(), _segments())
    assert voicings == [Voicing(name, notes) for _, name, notes in BLOCKS[:4]]


def test_document_round_trips_and_follows_the_pad_perform_shape():
    voicings = chord_voicings(_block_chord_file(), _segments())
    doc = progression_document("Am F C G - pop", voicings)
    body = doc["progression"]
    assert body["rootNote"] == "C" and body["scale"] == "Chromatic"
    assert body["recordingOctave"] == 2
    assert [c["role"] for c in body["chords"]] == ["Root", "Normal", "Normal", "Normal"]
    assert "-" not in body["name"]
    assert parse_progression(json.dumps(doc)) == voicings


def test_heading_is_the_only_hyphen_in_the_name():
    doc = progression_document("lo-fi keys", [Voicing("C", (60, 64, 67))], heading="Trap-Pack")
    assert doc["progression"]["name"] == "Trap Pack-lo fi keys"


def test_no_chord_segments_are_skipped_and_silent_chords_get_a_template():
    data = _block_chord_file()
    segments = [{"beat": 0.0, "label": "N"}, {"beat": 0.0, "label": "A:min"}]
    segments += [{"beat": 4.0, "label": "N"}]
    segments += [{"beat": 200.0, "label": "D:sus4"}]  # after the music ends: nothing sounds
    voicings = chord_voicings(data, segments)
    assert [v.name for v in voicings] == ["Am", "Dsus4"]
    assert voicings[0].notes == (57, 60, 64)
    assert {n % 12 for n in voicings[1].notes} == {2, 7, 9}


def test_a_voicing_holds_only_the_notes_of_its_own_segment():
    """C, Am, G a bar each: Am's 60 and 64 are C's tones too, but sound in Am's bar, not C's."""
    mid = mido.MidiFile(type=0, ticks_per_beat=TPQ)
    track = mido.MidiTrack()
    for notes in ((48, 52, 55), (57, 60, 64), (55, 59, 62)):
        track += [mido.Message("note_on", note=n, velocity=90, time=0) for n in notes]
        track += [mido.Message("note_off", note=n, time=4 * TPQ if i == 0 else 0) for i, n in enumerate(notes)]
    mid.tracks.append(track)
    buf = io.BytesIO()
    mid.save(file=buf)
    segments = [{"beat": 0.0, "label": "C:maj"}, {"beat": 4.0, "label": "A:min"}, {"beat": 8.0, "label": "G:maj"}]
    assert chord_voicings(buf.getvalue(), segments) == [
        Voicing("C", (48, 52, 55)), Voicing("Am", (57, 60, 64)), Voicing("G", (55, 59, 62))]


def test_at_most_sixteen_pads():
    many = [Voicing(f"C{i}", (60 + i,)) for i in range(MAX_PADS + 4)]
    chords = progression_document("many", many)["progression"]["chords"]
    assert len(chords) == MAX_PADS
    assert chords[-1]["notes"] == [60 + MAX_PADS - 1]


@pytest.mark.parametrize(
    ("label", "name"),
    [("A:min", "Am"), ("C:maj", "C"), ("B:dim", "Bdim"), ("C:aug", "Caug"), ("C:sus2", "Csus2"),
     ("C:maj7", "Cmaj7"), ("A:min7", "Am7"), ("G:7", "G7"), ("F#:min", "F#m"), ("C:maj/3", "C")],
)  # fmt: skip
def test_mpc_chord_names(label, name):
    assert chord_name(label) == name


@pytest.mark.parametrize("label", ["H:maj", "C:min9", "Cmaj"])
def test_bad_labels_name_the_allowed_values(label):
    with pytest.raises(ValueError, match="quality one of"):
        chord_voicings(_block_chord_file(), [{"beat": 0.0, "label": label}])


@pytest.mark.parametrize(
    "text",
    ["not json", '{"progression": {}}', '{"progression": {"chords": [{"name": "C", "notes": []}]}}',
     '{"progression": {"chords": [{"name": "C", "notes": [200]}]}}'],
)  # fmt: skip
def test_parse_rejects_malformed(text):
    with pytest.raises(ValueError):
        parse_progression(text)


def test_parse_takes_the_whole_midi_note_range():
    doc = {"progression": {"chords": [{"name": "low", "notes": [0, 12]}, {"name": "high", "notes": [115, 127]}]}}
    assert parse_progression(json.dumps(doc)) == [Voicing("low", (0, 12)), Voicing("high", (115, 127))]
    for bad in (-1, 128):
        doc["progression"]["chords"][0]["notes"] = [bad]
        with pytest.raises(ValueError, match="out-of-range"):
            parse_progression(json.dumps(doc))


def _seconds_to_quarters(score_q, score_s, seconds: float) -> float:
    """Map a time in seconds to quarter notes through the file's own tempo map."""
    q_times = [t.time for t in score_q.tempos]
    s_times = [t.time for t in score_s.tempos]
    i = max(j for j in range(len(s_times)) if s_times[j] <= seconds) if s_times else 0
    qpm = score_q.tempos[i].qpm if score_q.tempos else 120.0
    offset = seconds - (s_times[i] if s_times else 0.0)
    return (q_times[i] if q_times else 0.0) + offset * qpm / 60


def test_pop909_song_voicings_hold_only_chord_tones():
    from symusic import Score

    song = CORPUS / "pop909" / "001"
    if not (song / "001.mid").exists():
        pytest.skip(f"POP909 corpus not found at {song}")
    data = (song / "001.mid").read_bytes()
    score_q, score_s = Score.from_midi(data, ttype="quarter"), Score.from_midi(data, ttype="second")
    allowed = {"maj", "min", "dim", "aug", "sus2", "sus4", "maj7", "min7", "7"}
    segments = []
    for line in (song / "chord_midi.txt").read_text().splitlines():
        start, _, label = line.split()
        if label == "N" or label.split(":")[1].split("/")[0] in allowed:
            beat = _seconds_to_quarters(score_q, score_s, float(start))
            segments.append({"beat": beat, "label": label})
    voicings = chord_voicings(data, segments)
    assert len(voicings) >= 4
    assert len({v.name for v in voicings}) == len(voicings)
    for voicing, label in zip(voicings, _first_labels(segments)):
        assert chord_name(label) == voicing.name
        assert len(voicing.notes) >= 2, voicing  # real voicings, not an empty pad
    doc = progression_document("001", voicings)
    assert parse_progression(json.dumps(doc)) == voicings[:MAX_PADS]


def _first_labels(segments: list[dict]) -> list[str]:
    seen: dict[str, str] = {}
    for seg in segments:
        if seg["label"] != "N":
            seen.setdefault(chord_name(seg["label"]), seg["label"])
    return list(seen.values())
