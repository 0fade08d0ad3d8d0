"""analyze_bytes on synthetic files built with mido, where a property must be exact."""

from __future__ import annotations

import io
import json
from pathlib import Path

import mido
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from midid.analysis import Analysis, AnalysisError, analyze_bytes
from midid.analysis.chords import progression, roman
from midid.analysis.parse import parse_midi

DATA = Path(__file__).parent / "data" / "analysis"
JSON_KEYS = {
    "bpm", "bpm_source", "bpm_estimate", "tempo_changes", "time_signature", "duration_s",
    "bars", "key_tonic", "key_mode", "key_confidence", "is_drums", "drum_parts", "chords",
    "progression", "notes", "tracks", "channels", "programs", "pitch_min", "pitch_max",
    "polyphony", "category", "tags", "parser",
}
TPQ = 480


def smf(*tracks: list[mido.Message | mido.MetaMessage], type_: int = 1, tpq: int = TPQ) -> bytes:
    """Bytes of a MIDI file whose tracks hold the given messages (delta times in ticks)."""
    mf = mido.MidiFile(type=type_, ticks_per_beat=tpq)
    for msgs in tracks:
        mf.tracks.append(mido.MidiTrack(msgs))
    out = io.BytesIO()
    mf.save(file=out)
    return out.getvalue()


def notes(seq: list[tuple[int, int]], channel: int = 0, gap: int = 0, vel: int = 100) -> list:
    """Monophonic notes: (pitch, length in ticks) each, ``gap`` ticks of rest between."""
    msgs: list = []
    for i, (pitch, length) in enumerate(seq):
        msgs.append(mido.Message("note_on", note=pitch, velocity=vel, channel=channel,
                                 time=gap if i else 0))
        msgs.append(mido.Message("note_off", note=pitch, channel=channel, time=length))
    return msgs


def chords_track(chords: list[tuple[int, ...]], length: int) -> list:
    """Block chords (MIDI pitches), each held ``length`` ticks."""
    msgs: list = []
    for chord in chords:
        for p in chord:
            msgs.append(mido.Message("note_on", note=p, velocity=90, time=0))
        for i, p in enumerate(chord):
            msgs.append(mido.Message("note_off", note=p, time=length if i == 0 else 0))
    return msgs


def drum_pattern(bars: int, kick_only: bool = False, channel: int = 9) -> list:
    """A rock beat in 16th-note steps: kick on 1 and 3, snare on 2 and 4, eighth hats."""
    msgs: list = []
    pending = 0
    for step in range(bars * 16):
        hits = []
        if step % 8 == 0:
            hits.append(36)
        if not kick_only:
            if step % 8 == 4:
                hits.append(38)
            if step % 2 == 0:
                hits.append(42)
        for i, p in enumerate(hits):
            msgs.append(mido.Message("note_on", note=p, velocity=100, channel=channel,
                                     time=pending if i == 0 else 0))
            pending = 0
        for i, p in enumerate(hits):
            msgs.append(mido.Message("note_off", note=p, channel=channel, time=60 if i == 0 else 0))
        pending += TPQ // 4 - (60 if hits else 0)
    return msgs


C_MAJOR_SCALE = [(p, TPQ) for p in (60, 62, 64, 65, 67, 69, 71, 72)]


def test_c_major_scale_is_a_c_major_melody() -> None:
    a = analyze_bytes(smf(notes(C_MAJOR_SCALE)))
    assert (a.key_tonic, a.key_mode) == ("C", "major")
    assert 0 < a.key_confidence <= 1
    assert (a.pitch_min, a.pitch_max, a.notes) == (60, 72, 8)
    assert a.polyphony == pytest.approx(1.0)
    assert a.category == "Melody"
    assert not a.is_drums and a.drum_parts["kick"] == 0
    assert a.bpm_source == "estimate" and a.bpm_estimate is not None
    assert a.time_signature == "4/4" and a.bars == 2
    assert a.duration_s == pytest.approx(4.0)  # 8 quarters at the default 120 BPM
    assert a.parser == "symusic"


# Notes of C major (and of A minor): a melody that starts and ends on C reads as C major.
AMBIGUOUS_LEAD = [(p, TPQ) for p in (72, 74, 76, 77, 79, 77, 76, 74, 72, 76, 79, 84, 79, 76, 72, 69)]


def test_a_key_the_name_states_wins_where_the_notes_allow_it_and_not_against_them() -> None:
    data = smf(notes(AMBIGUOUS_LEAD))
    plain = analyze_bytes(data)
    assert (plain.key_tonic, plain.key_mode) == ("C", "major")
    relative = analyze_bytes(data, filename_key=("A", "minor"))  # "Lead Am.mid": same notes
    assert (relative.key_tonic, relative.key_mode) == ("A", "minor")
    assert 0 < relative.key_confidence < plain.key_confidence
    for against in (("F#", "minor"), ("C#", "major")):  # none of its notes' keys
        named = analyze_bytes(data, filename_key=against)
        assert (named.key_tonic, named.key_mode) == ("C", "major")
    assert analyze_bytes(smf(drum_pattern(2)), filename_key=("A", "minor")).key_tonic is None


def test_midictl_analyze_reads_the_key_a_file_or_its_folder_names(tmp_path: Path) -> None:
    from midid.analysis.report import analyze_paths

    (tmp_path / "Dark Keys Am").mkdir()
    for path in (tmp_path / "Lead Am.mid", tmp_path / "Dark Keys Am" / "lead.mid", tmp_path / "Lead.mid"):
        path.write_bytes(smf(notes(AMBIGUOUS_LEAD)))
    rows = analyze_paths([str(tmp_path / "Lead Am.mid"), str(tmp_path / "Dark Keys Am" / "lead.mid"),
                          str(tmp_path / "Lead.mid")])
    assert [(r["key_tonic"], r["key_mode"]) for r in rows] == [("A", "minor"), ("A", "minor"), ("C", "major")]


def test_to_dict_has_exactly_the_json_keys_and_is_serialisable() -> None:
    d = analyze_bytes(smf(notes(C_MAJOR_SCALE))).to_dict()
    assert set(d) == JSON_KEYS
    assert json.loads(json.dumps(d)) == d


def test_tempo_map_with_changes() -> None:
    # 4 quarters at 120, 8 at 90, 4 at 140: 90 BPM holds longest.
    conductor = [
        mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(120), time=0),
        mido.MetaMessage("time_signature", numerator=3, denominator=4, time=0),
        mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(90), time=4 * TPQ),
        mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(140), time=8 * TPQ),
    ]
    a = analyze_bytes(smf(conductor, notes([(60, TPQ)] * 16)))
    assert a.bpm_source == "meta"
    assert a.bpm == pytest.approx(90.0)
    assert a.tempo_changes == 2
    assert a.time_signature == "3/4"
    assert a.duration_s == pytest.approx(4 * 0.5 + 8 * 60 / 90 + 4 * 60 / 140, abs=1e-3)
    assert a.bars == 6  # 16 quarters in 3/4


def test_filename_bpm_fills_in_for_a_missing_tempo_map_but_not_a_present_one() -> None:
    plain = smf(notes(C_MAJOR_SCALE))
    assert analyze_bytes(plain, filename_bpm=95.0).bpm == 95.0
    assert analyze_bytes(plain, filename_bpm=95.0).bpm_source == "filename"
    tempo = [mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(100), time=0)]
    a = analyze_bytes(smf(tempo, notes(C_MAJOR_SCALE)), filename_bpm=95.0)
    assert (a.bpm, a.bpm_source) == (100.0, "meta")


def test_a_stated_file_name_tempo_beats_the_120_bpm_placeholder_of_a_quantised_file() -> None:
    """A pack exported without setting the tempo says 120 (the MIDI default); "Trap 140bpm"
    is what the author meant. A bare number, another tempo, a tempo map with changes keep
    the file's own."""
    at = lambda bpm: mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm), time=0)  # noqa: E731
    placeholder = smf([at(120)], drum_pattern(4))
    a = analyze_bytes(placeholder, filename_bpm=140.0, filename_bpm_stated=True)
    assert (a.bpm, a.bpm_source) == (140.0, "filename")
    assert analyze_bytes(placeholder, filename_bpm=140.0).bpm_source == "meta"  # "Trap 140.mid"
    assert analyze_bytes(placeholder, filename_bpm=120.5, filename_bpm_stated=True).bpm == 120.0
    own = analyze_bytes(smf([at(121)], drum_pattern(4)), filename_bpm=140.0, filename_bpm_stated=True)
    assert (own.bpm, own.bpm_source) == (121.0, "meta")
    changes = [at(120), mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(130), time=TPQ * 8)]
    mapped = analyze_bytes(smf(changes, drum_pattern(4)), filename_bpm=140.0, filename_bpm_stated=True)
    assert mapped.bpm_source == "meta" and mapped.tempo_changes == 1


def test_bpm_estimate_recovers_a_drum_beat_without_tempo_events() -> None:
    # The beat is written at 120 BPM ticks but the file claims nothing: estimate must say 120.
    a = analyze_bytes(smf(drum_pattern(8)))
    assert a.bpm_estimate == pytest.approx(120, rel=0.04)
    assert a.bpm_source == "estimate"


def test_filename_bpm_picks_the_octave_of_a_quantised_estimate() -> None:
    """Written on the tick grid at 70 BPM: a "140bpm" name says the pulse twice as fast is the
    beat; a name that is no octave relative of 70 is ignored."""
    data = smf([mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(70), time=0)], drum_pattern(8))
    assert analyze_bytes(data).bpm_estimate == 70.0
    assert analyze_bytes(data, filename_bpm=140.0).bpm_estimate == 140.0
    assert analyze_bytes(data, filename_bpm=105.0).bpm_estimate == 105.0  # 1.5x
    assert analyze_bytes(data, filename_bpm=88.0).bpm_estimate == 70.0  # 1.26x: not a relative


def test_type0_file_mixing_drums_and_bass() -> None:
    track: list = [mido.Message("program_change", program=33, channel=1, time=0)]
    events = []  # absolute (tick, message)
    for step in range(32):
        t = step * TPQ // 2
        events.append((t, mido.Message("note_on", note=36 if step % 4 == 0 else 42,
                                       velocity=100, channel=9)))
        events.append((t + 60, mido.Message("note_off", note=36 if step % 4 == 0 else 42,
                                            channel=9)))
        if step % 2 == 0:
            pitch = (40, 43, 45, 47)[step // 2 % 4]
            events.append((t, mido.Message("note_on", note=pitch, velocity=90, channel=1)))
            events.append((t + TPQ - 10, mido.Message("note_off", note=pitch, channel=1)))
    now = 0
    for tick, msg in sorted(events, key=lambda e: (e[0], e[1].type == "note_on")):
        track.append(msg.copy(time=tick - now))
        now = tick
    a = analyze_bytes(smf(track, type_=0))
    assert a.tracks == 1 and a.channels == 2
    assert a.programs == [33]
    assert a.notes == 48
    assert a.drum_parts["kick"] == pytest.approx(8 / 32)
    assert a.drum_parts["hats"] == pytest.approx(24 / 32)
    assert a.is_drums  # 32 of 48 notes are drums
    assert a.category == "Loops"
    assert a.key_tonic is not None  # the bass line still has a key


def test_kick_only_file_is_drum_kicks() -> None:
    a = analyze_bytes(smf(drum_pattern(4, kick_only=True)))
    assert a.is_drums
    assert a.drum_parts["kick"] == 1.0
    assert a.category == "DrumKicks"
    assert a.key_tonic is None and a.key_mode is None and a.key_confidence is None
    assert a.chords == [] and a.progression == []


def test_drum_kit_on_channel_1_is_found_by_its_note_map() -> None:
    a = analyze_bytes(smf(drum_pattern(4, channel=0)))
    assert a.is_drums
    assert a.category == "Drums"
    assert a.key_tonic is None


def test_tags_are_priors_not_overrides() -> None:
    bass_line = smf(notes([(p, TPQ) for p in (36, 36, 43, 41, 36, 38, 43, 41)]))
    assert analyze_bytes(bass_line).category == "Bass"
    assert analyze_bytes(bass_line, prior_tags=["loop"]).category == "Loops"
    assert analyze_bytes(bass_line, prior_tags=["chord"]).category == "Bass"  # not chordal
    a = analyze_bytes(bass_line, prior_tags=["bass", "trap"])
    assert "bass" in a.tags and "trap" in a.tags


# C - Am - F - G as block chords: a four-chord progression in C major.
C_AM_F_G = [(48, 64, 67, 72), (45, 64, 69, 72), (41, 65, 69, 72), (43, 62, 67, 71)]


def one_beat_chord_loop(numerator: int = 1, denominator: int = 4) -> bytes:
    """8 bars of C-Am-F-G, a chord per bar, under a one-beat time signature (a converter's
    1/4 placeholder): read literally, 32 one-beat bars, too long for a loop and too slow to
    change chords; read as no signature, 8 bars of 4/4, a Progression."""
    conductor = [mido.MetaMessage("time_signature", numerator=numerator, denominator=denominator, time=0)]
    return smf(conductor, chords_track(C_AM_F_G * 2, 4 * TPQ))


def test_block_chords_and_progression() -> None:
    # One bar each, repeated.
    a = analyze_bytes(smf(chords_track(C_AM_F_G * 2, 4 * TPQ)))
    assert [c["label"] for c in a.chords] == ["C:maj", "A:min", "F:maj", "G:maj"] * 2
    assert [c["beat"] for c in a.chords] == [4.0 * i for i in range(8)]
    assert (a.key_tonic, a.key_mode) == ("C", "major")
    assert a.progression == ["I", "vi", "IV", "V"]
    assert a.category == "Progressions"
    assert a.polyphony == pytest.approx(4.0)


@pytest.mark.parametrize(("numerator", "denominator"), [(1, 4), (1, 8)])
def test_a_one_beat_time_signature_is_read_as_none(numerator: int, denominator: int) -> None:
    a = analyze_bytes(one_beat_chord_loop(numerator, denominator))
    assert (a.time_signature, a.bars) == ("4/4", 8)
    assert a.category == "Progressions"
    # A one-beat bar later on does not replace the meter in force at the first note.
    conductor = [mido.MetaMessage("time_signature", numerator=3, denominator=4, time=0),
                 mido.MetaMessage("time_signature", numerator=numerator,
                                  denominator=denominator, time=12 * TPQ)]
    assert analyze_bytes(smf(conductor, chords_track(C_AM_F_G, 3 * TPQ))).time_signature == "3/4"


def test_one_sustained_chord_is_chords() -> None:
    a = analyze_bytes(smf(chords_track([(57, 60, 64, 67)], 16 * TPQ)))
    assert a.category == "Chords"
    assert a.chords == [{"beat": 0.0, "label": "A:min7"}]


@pytest.mark.parametrize(
    ("label", "tonic", "mode", "numeral"),
    [
        ("A:min", "C", "major", "vi"),
        ("A#:maj", "C", "major", "bVII"),
        ("C:maj", "A", "minor", "III"),
        ("E:7", "A", "minor", "V7"),
        ("B:dim", "C", "major", "viio"),
        ("F#:min7", "E", "major", "ii7"),
    ],
)
def test_roman_numerals(label: str, tonic: str, mode: str, numeral: str) -> None:
    assert roman(label, tonic, mode) == numeral


def test_progression_is_the_repeating_cycle() -> None:
    seq = [(float(i), lab) for i, lab in enumerate(["A:min", "F:maj", "C:maj", "G:maj"] * 3)]
    assert progression(seq, "C", "major") == ["vi", "IV", "I", "V"]
    assert progression(seq, None, None) == []
    # A cycle cut short at the end still counts; a sequence with no cycle gives its first 8.
    cut = [(float(i), lab) for i, lab in enumerate((["D:min", "G:7", "C:maj"] * 4)[:11])]
    assert progression(cut, "C", "major") == ["ii", "V7", "I"]
    walk = [(float(i), f"{t}:maj") for i, t in enumerate(["C", "D", "E", "F", "G", "A", "B", "C#", "D#"])]
    assert progression(walk, "C", "major") == ["I", "II", "III", "IV", "V", "VI", "VII", "bII"]


@given(st.lists(st.sampled_from(["C:maj", "A:min", "F:maj", "G:maj"]), min_size=1, max_size=40))
def test_progression_cycle_is_the_shortest_prefix_that_repeats(labels: list[str]) -> None:
    merged = [lab for i, lab in enumerate(labels) if i == 0 or lab != labels[i - 1]]
    got = progression([(float(i), lab) for i, lab in enumerate(labels)], "C", "major")
    n = len(merged)
    size = next((k for k in range(2, min(8, n // 2) + 1)
                 if all(merged[i] == merged[i % k] for i in range(n))), None)
    expected = merged[:size] if size else merged[:8]
    assert got == [roman(lab, "C", "major") for lab in expected]


def test_notes_without_note_offs_still_get_durations() -> None:
    msgs = [mido.Message("note_on", note=p, velocity=100, time=TPQ if i else 0)
            for i, (p, _) in enumerate(C_MAJOR_SCALE)]
    a = analyze_bytes(smf(msgs))
    assert a.parser == "mido"
    assert a.notes == 8
    assert a.polyphony == pytest.approx(1.0)  # each note ends where the next begins
    assert (a.key_tonic, a.key_mode) == ("C", "major")


def test_lying_track_lengths_are_read_leniently() -> None:
    good = smf(notes(C_MAJOR_SCALE))
    mtrk = good.index(b"MTrk")
    too_long = good[: mtrk + 4] + (10**6).to_bytes(4, "big") + good[mtrk + 8 :]
    too_short = good[: mtrk + 4] + (12).to_bytes(4, "big") + good[mtrk + 8 :]
    for data in (too_long, too_short):
        a = analyze_bytes(data)
        assert a.parser == "mido"
        assert a.notes == 8


def test_both_parsers_give_contiguous_arrays() -> None:
    """The compiled kernels are specialised per array layout: a strided array from the lenient
    parser cost a second compilation (2 s of CPU) on the first broken file a process met."""
    good = smf(notes(C_MAJOR_SCALE) + [mido.MetaMessage("set_tempo", tempo=400000, time=0)])
    mtrk = good.index(b"MTrk")
    lying = good[: mtrk + 4] + (10**6).to_bytes(4, "big") + good[mtrk + 8 :]
    for data, parser in ((good, "symusic"), (lying, "mido")):
        midi = parse_midi(data)
        assert midi.parser == parser and midi.start.size == 8 and midi.tempo_ticks.size == 1
        for name in ("start", "end", "pitch", "velocity", "voice", "tempo_ticks", "tempo_mspq"):
            assert getattr(midi, name).flags["C_CONTIGUOUS"], (parser, name)


def test_track_count_is_the_chunks_not_the_mtrk_bytes_in_a_text() -> None:
    named = [mido.MetaMessage("text", text="MTrk MTrk", time=0)] + notes(C_MAJOR_SCALE)
    assert analyze_bytes(smf(named, notes(C_MAJOR_SCALE))).tracks == 2


def test_truncated_file_keeps_the_notes_before_the_cut() -> None:
    good = smf(notes(C_MAJOR_SCALE * 4))
    a = analyze_bytes(good[: len(good) // 2])
    assert a.parser == "mido"
    assert 0 < a.notes < 32


def test_file_without_notes_is_fx() -> None:
    a = analyze_bytes(smf([mido.MetaMessage("set_tempo", tempo=500000, time=0)]))
    assert a.notes == 0 and a.category == "FX" and a.bars == 0
    assert a.pitch_min is None and a.key_tonic is None and a.bpm_estimate is None


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "not a MIDI file"),
        (b"RIFF\x00\x00\x00\x00WAVE", "not a MIDI file"),
        (b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\x00\x00", "0 ticks per quarter"),
        (b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\xe7\x28", "SMPTE"),
        (b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\x01\xe0", "no readable"),
    ],
)
def test_unreadable_bytes_raise_a_one_line_analysis_error(data: bytes, reason: str) -> None:
    with pytest.raises(AnalysisError, match=reason) as info:
        analyze_bytes(data)
    assert "\n" not in str(info.value)


def test_smpte_division_with_content_is_refused() -> None:
    data = bytearray(smf(notes(C_MAJOR_SCALE)))
    data[12:14] = b"\xe7\x28"
    with pytest.raises(AnalysisError, match="SMPTE"):
        analyze_bytes(bytes(data))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cut=st.integers(min_value=0, max_value=400),
       flips=st.lists(st.tuples(st.integers(0, 399), st.integers(0, 255)), max_size=6))
def test_damaged_files_never_crash(cut: int, flips: list[tuple[int, int]]) -> None:
    base = bytearray(smf(notes(C_MAJOR_SCALE * 3), drum_pattern(1)))
    for pos, value in flips:
        if pos < len(base):
            base[pos] = value
    try:
        a = analyze_bytes(bytes(base[: max(cut, 14)]))
    except AnalysisError:
        return
    assert isinstance(a, Analysis)
    json.dumps(a.to_dict())


def test_pedal_hi_hat_plays_the_backbeat_role_in_the_tempo_estimate() -> None:
    from midid.analysis.analyze import onset_roles
    from midid.analysis.tempo import ROLES

    roles = onset_roles(np.array([36, 38, 44, 42, 51]), np.ones(5, dtype=bool))
    assert [ROLES[1 + r] for r in roles] == ["low", "back", "back", "high", "high"]


@pytest.mark.parametrize("bpm", [160.0, 180.0])
def test_a_groove_whose_backbeat_is_the_pedal_hi_hat_reads_at_its_beat(bpm: float) -> None:
    # Ride eighths, kick on 1 and 3, pedal hi-hat on 2 and 4 (a jazz-style time feel), played
    # with 5 ms of jitter: the pedal marks every second beat as a snare would, so the estimate
    # is the beat; read as a hi-hat (high role) the same onsets give half the tempo.
    from midid.analysis.analyze import onset_roles
    from midid.analysis.tempo import estimate_bpm

    beat = 60.0 / bpm
    onsets, pitch = [], []
    for k in range(int(16 / beat)):
        onsets += [k * beat, k * beat + beat / 2, k * beat]
        pitch += [51, 51, 36 if k % 2 == 0 else 44]
    times = np.array(onsets) + np.random.default_rng(3).normal(0, 0.005, len(onsets))
    pitches = np.array(pitch)
    roles = onset_roles(pitches, np.ones(pitches.size, dtype=bool))
    weight = np.full(times.size, 0.8)
    assert estimate_bpm(times, weight, roles) == pytest.approx(bpm, rel=0.04)
    as_hat = np.where(pitches == 44, 2, roles).astype(np.int8)
    assert estimate_bpm(times, weight, as_hat) == pytest.approx(bpm / 2, rel=0.04)


def test_a_kit_on_channel_1_is_found_by_its_track_name() -> None:
    """Congas and bongos (GM 60-64, all "perc") on channel 1: by their notes alone a melody;
    under a track named "Percussion" a kit."""
    hits = [(p, TPQ // 4) for p in (60, 61, 62, 63, 64, 62, 61, 60)] * 2
    unnamed = analyze_bytes(smf(notes(hits, gap=TPQ // 4)))
    named = analyze_bytes(smf([mido.MetaMessage("track_name", name="Percussion", time=0),
                               *notes(hits, gap=TPQ // 4)]))
    assert not unnamed.is_drums and unnamed.category in ("Melody", "Bass")
    assert named.is_drums and named.drum_parts["perc"] == 1.0 and named.category == "DrumPerc"


def test_a_file_name_that_says_kick_makes_a_one_note_pattern_on_channel_1_a_kick() -> None:
    """One note (C1 = GM kick) repeated on channel 1: alone it could be a bass ostinato, and it
    is read so; a "kick" in the file name tips it to the kit (a prior the notes allow)."""
    data = smf(drum_pattern(4, kick_only=True, channel=0))
    assert not analyze_bytes(data).is_drums
    tagged = analyze_bytes(data, prior_tags=["kick"])
    assert tagged.is_drums and tagged.category == "DrumKicks"
    # A bass line in a "drum & bass" folder keeps its notes' verdict: too many distinct
    # notes for a tagged kit, too few on the core kit map for an untagged one.
    bass_line = smf(notes([(p, TPQ) for p in (36, 38, 41, 43, 45, 48, 36, 41)]))
    assert not analyze_bytes(bass_line, prior_tags=["drum", "bass"]).is_drums
