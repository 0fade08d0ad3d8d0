"""Tests for midid.stages.split: real POP909 songs, synthetic type-0 files, bad input."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import mido
import pytest
import symusic
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from midid.smf import (
    Event,
    SmfError,
    encode_vlq,
    iter_events,
    iter_spans,
    note_channels,
    read_smf,
    write_smf,
    write_track,
)
from midid.stages.split import Part, SplitError, split_midi

DATA = Path(__file__).resolve().parent / "data" / "split"
CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"
POP909_LOCAL = sorted(DATA.glob("pop909_*.mid"))


def _notes(track: symusic.core.TrackTick) -> list[tuple[int, int, int, int]]:
    return sorted((n.time, n.pitch, n.duration, n.velocity) for n in track.notes)


def _mido_notes(midi: mido.MidiFile, channel: int | None = None) -> list[tuple]:
    """(absolute tick, type, note, velocity, channel) of every note message, merged tracks."""
    out = []
    for track in midi.tracks:
        tick = 0
        for msg in track:
            tick += msg.time
            if msg.type in ("note_on", "note_off") and channel in (None, msg.channel):
                out.append((tick, msg.type, msg.note, msg.velocity, msg.channel))
    return sorted(out)


def _timing(score: symusic.Score) -> tuple[list, list, list]:
    return (
        [(t.time, t.mspq) for t in score.tempos],
        [(t.time, t.numerator, t.denominator) for t in score.time_signatures],
        [(k.time, k.key, k.tonality) for k in score.key_signatures],
    )


def _assert_pop909_split(data: bytes) -> list[Part]:
    """Check a POP909 song splits into its three tracks, note for note, timing intact."""
    source = symusic.Score.from_midi(data)
    source_mido = mido.MidiFile(file=io.BytesIO(data))
    parts = split_midi(data)
    assert [p.label for p in parts] == ["MELODY", "BRIDGE", "PIANO"]
    assert [p.track_name for p in parts] == ["MELODY", "BRIDGE", "PIANO"]
    assert [p.index for p in parts] == [1, 2, 3]
    for part, src_track, src_mido_track in zip(parts, source.tracks, source_mido.tracks[1:]):
        score = symusic.Score.from_midi(part.data)
        assert score.ticks_per_quarter == source.ticks_per_quarter
        assert len(score.tracks) == 1
        assert score.tracks[0].name == src_track.name
        assert score.tracks[0].program == src_track.program
        assert _notes(score.tracks[0]) == _notes(src_track)
        assert _timing(score) == _timing(source)
        part_mido = mido.MidiFile(file=io.BytesIO(part.data))
        assert part_mido.type == 1
        assert len(part_mido.tracks) == 2
        assert list(part_mido.tracks[0]) == list(source_mido.tracks[0])
        assert list(part_mido.tracks[1]) == list(src_mido_track)
    return parts


@pytest.mark.parametrize("path", POP909_LOCAL, ids=lambda p: p.name)
def test_pop909_splits_into_three_parts_note_for_note(path: Path) -> None:
    _assert_pop909_split(path.read_bytes())


def test_pop909_corpus_sample_splits_note_for_note() -> None:
    songs = sorted((CORPUS / "pop909").glob("*/*.mid"))
    if not songs:
        pytest.skip(f"POP909 corpus not found under {CORPUS / 'pop909'}")
    for song in songs[::15]:  # 20 songs spread over the subset keeps the test fast
        _assert_pop909_split(song.read_bytes())


def test_pop909_tempo_changes_survive() -> None:
    data = (DATA / "pop909_235.mid").read_bytes()
    source_tempos = _timing(symusic.Score.from_midi(data))[0]
    assert len(source_tempos) > 1  # the point of this file: several tempo changes
    for part in split_midi(data):
        assert _timing(symusic.Score.from_midi(part.data))[0] == source_tempos


def test_rmid_wrapped_file_splits_like_the_plain_file() -> None:
    data = POP909_LOCAL[0].read_bytes()
    body = b"data" + struct.pack("<I", len(data)) + data + b"\0" * (len(data) & 1)
    rmid = b"RIFF" + struct.pack("<I", 4 + len(body)) + b"RMID" + body
    assert split_midi(rmid) == split_midi(data)


def _save(midi: mido.MidiFile) -> bytes:
    buf = io.BytesIO()
    midi.save(file=buf)
    return buf.getvalue()


def _type0_drums_and_bass() -> bytes:
    """A type-0 file: tempo, time signature, a sysex, bass on channel 1, drums on channel 10."""
    track = mido.MidiTrack(
        [
            mido.MetaMessage("track_name", name="Groove", time=0),
            mido.MetaMessage("set_tempo", tempo=500000, time=0),
            mido.MetaMessage("time_signature", numerator=4, denominator=4, time=0),
            mido.Message("sysex", data=[0x7E, 0x7F, 0x09, 0x01], time=0),
            mido.Message("program_change", channel=0, program=33, time=0),
            mido.Message("control_change", channel=0, control=7, value=100, time=0),
            mido.Message("note_on", channel=9, note=36, velocity=100, time=0),
            mido.Message("note_on", channel=0, note=40, velocity=90, time=0),
            mido.Message("note_on", channel=9, note=36, velocity=0, time=120),
            mido.Message("note_on", channel=9, note=38, velocity=110, time=120),
            mido.MetaMessage("set_tempo", tempo=400000, time=0),
            mido.Message("note_off", channel=0, note=40, velocity=0, time=240),
            mido.Message("note_on", channel=9, note=38, velocity=0, time=0),
            mido.Message("note_on", channel=0, note=43, velocity=80, time=0),
            mido.Message("note_off", channel=0, note=43, velocity=0, time=480),
            mido.MetaMessage("end_of_track", time=192),  # trailing rest: the loop's length
        ]
    )
    return _save(mido.MidiFile(type=0, ticks_per_beat=96, tracks=[track]))


def test_type0_splits_by_channel_with_labels() -> None:
    data = _type0_drums_and_bass()
    parts = split_midi(data)
    assert [(p.label, p.index, p.track_name) for p in parts] == [
        ("Bass", 0, None),
        ("Drums", 9, None),
    ]
    source = mido.MidiFile(file=io.BytesIO(data))
    for part in parts:
        midi = mido.MidiFile(file=io.BytesIO(part.data))
        assert midi.type == 0
        assert midi.ticks_per_beat == 96
        assert _mido_notes(midi) == _mido_notes(source, part.index)
        channels = {m.channel for m in midi.tracks[0] if not m.is_meta and m.type != "sysex"}
        assert channels == {part.index}
        # Meta and sysex events at the same absolute ticks as in the source.
        assert _abs_meta(midi) == _abs_meta(source)
        assert sum(m.time for m in midi.tracks[0]) == sum(m.time for m in source.tracks[0])
    bass = mido.MidiFile(file=io.BytesIO(parts[0].data))
    assert any(m.type == "control_change" for m in bass.tracks[0])


def test_type0_part_label_is_the_program_before_the_channel_s_first_note() -> None:
    """A program change after a channel's first note (a mid-song patch switch) does not rename
    the part; one before it does, for that channel only."""
    track = mido.MidiTrack([
        mido.Message("program_change", channel=0, program=33, time=0),  # Electric Bass (finger)
        mido.Message("note_on", channel=0, note=40, velocity=90, time=0),
        mido.Message("program_change", channel=1, program=0, time=0),  # Acoustic Grand Piano
        mido.Message("note_on", channel=1, note=64, velocity=90, time=0),
        mido.Message("note_off", channel=0, note=40, velocity=0, time=480),
        mido.Message("note_off", channel=1, note=64, velocity=0, time=0),
        mido.Message("program_change", channel=0, program=0, time=0),
        mido.Message("program_change", channel=1, program=40, time=0),  # Violin
        mido.Message("note_on", channel=0, note=43, velocity=90, time=0),
        mido.Message("note_on", channel=1, note=67, velocity=90, time=0),
        mido.Message("note_off", channel=0, note=43, velocity=0, time=480),
        mido.Message("note_off", channel=1, note=67, velocity=0, time=0),
    ])
    parts = split_midi(_save(mido.MidiFile(type=0, ticks_per_beat=480, tracks=[track])))
    assert [(p.label, p.index) for p in parts] == [("Bass", 0), ("Piano", 1)]


def _abs_meta(midi: mido.MidiFile) -> list[tuple[int, str]]:
    tick, out = 0, []
    for msg in midi.tracks[0]:
        tick += msg.time
        if (msg.is_meta or msg.type == "sysex") and msg.type != "end_of_track":
            out.append((tick, str(msg.copy(time=0))))
    return out


def _type1(tracks: list[list[mido.Message]]) -> bytes:
    return _save(mido.MidiFile(type=1, ticks_per_beat=480,
                               tracks=[mido.MidiTrack(t) for t in tracks]))


def _notes_on(channel: int, pitch: int, start: int = 0) -> list[mido.Message]:
    return [
        mido.Message("note_on", channel=channel, note=pitch, velocity=100, time=start),
        mido.Message("note_off", channel=channel, note=pitch, velocity=0, time=240),
    ]


def test_type1_with_notes_in_track0_rebuilds_the_conductor() -> None:
    track0 = [
        mido.MetaMessage("track_name", name="Song", time=0),
        mido.MetaMessage("set_tempo", tempo=600000, time=0),
        mido.MetaMessage("time_signature", numerator=3, denominator=4, time=0),
        mido.MetaMessage("key_signature", key="Em", time=0),
        mido.MetaMessage("marker", text="verse", time=0),
        mido.Message("program_change", channel=0, program=0, time=0),
        *_notes_on(0, 60),
        mido.MetaMessage("set_tempo", tempo=450000, time=960),
        *_notes_on(0, 62),
    ]
    track0.append(mido.MetaMessage("end_of_track", time=3000))
    track1 = [mido.MetaMessage("track_name", name="Lead", time=0), *_notes_on(1, 72, 100)]
    data = _type1([track0, track1])
    source = symusic.Score.from_midi(data)
    parts = split_midi(data)
    assert [(p.label, p.index) for p in parts] == [("Song", 0), ("Lead", 1)]

    first = mido.MidiFile(file=io.BytesIO(parts[0].data))
    assert first.type == 0
    assert list(first.tracks[0]) == list(mido.MidiFile(file=io.BytesIO(data)).tracks[0])

    second = mido.MidiFile(file=io.BytesIO(parts[1].data))
    assert second.type == 1
    conductor = second.tracks[0]
    assert not [m for m in conductor if not m.is_meta]
    assert "marker" not in {m.type for m in conductor}
    assert sum(m.time for m in conductor) == sum(m.time for m in first.tracks[0])
    score = symusic.Score.from_midi(parts[1].data)
    assert _timing(score) == _timing(source)
    assert _notes(score.tracks[-1]) == _notes(next(t for t in source.tracks if t.name == "Lead"))


def test_labels_fall_back_to_gm_family_then_channel_and_dedupe() -> None:
    data = _type1(
        [
            [mido.MetaMessage("set_tempo", tempo=500000, time=0)],
            [mido.MetaMessage("track_name", name="Track 1", time=0),
             mido.Message("program_change", channel=0, program=41, time=0), *_notes_on(0, 60)],
            [mido.Message("program_change", channel=1, program=42, time=0), *_notes_on(1, 64)],
            [*_notes_on(2, 67)],
            [*_notes_on(9, 36)],
            [mido.MetaMessage("track_name", name="Lead / Synth: #1", time=0), *_notes_on(3, 70)],
            [mido.MetaMessage("track_name", name="only a name", time=0)],
            [mido.MetaMessage("track_name", name="strings 2", time=0), *_notes_on(4, 50)],
        ]
    )
    parts = split_midi(data)
    assert [(p.label, p.index) for p in parts] == [
        ("Strings", 1), ("Strings_2", 2), ("ch3", 3), ("Drums", 4), ("Lead_Synth_1", 5),
        ("strings_2_2", 7),
    ]
    assert parts[0].track_name == "Track 1"
    assert parts[1].track_name is None


def test_nothing_to_split() -> None:
    single = _type1([[mido.MetaMessage("set_tempo", tempo=500000, time=0), *_notes_on(0, 60)]])
    assert split_midi(single) == []
    one_note_track = _type1([[mido.MetaMessage("set_tempo", tempo=500000, time=0)],
                             _notes_on(0, 60), [mido.Message("control_change", time=0)]])
    assert split_midi(one_note_track) == []
    type0_one_channel = _save(mido.MidiFile(type=0, tracks=[mido.MidiTrack(
        [*_notes_on(9, 36), *_notes_on(9, 38)])]))
    assert split_midi(type0_one_channel) == []


def test_groove_drum_files_are_not_split() -> None:
    files = sorted((CORPUS / "groove").glob("*/*/*.mid"))[:20]
    if not files:
        pytest.skip(f"Groove corpus not found under {CORPUS / 'groove'}")
    for path in files:
        assert split_midi(path.read_bytes()) == []


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not a midi file at all",
        b"MThd\x00\x00\x00\x06\x00\x01\x00\x02\x01\xe0",  # declares 2 tracks, has none
        b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\x01\xe0MTrk\xff\xff\xff\xff\x00",  # lying length
        b"MThd\x00\x00\x00\x06\x00\x07\x00\x01\x01\xe0",  # unknown format
        b"RIFF\x10\x00\x00\x00RMIDdata\xff\xff\xff\x7f",  # RMID with a lying data chunk
    ],
)
def test_garbage_raises_split_error(data: bytes) -> None:
    with pytest.raises(SplitError):
        split_midi(data)


def test_truncated_file_raises_split_error() -> None:
    data = POP909_LOCAL[0].read_bytes()
    for cut in (10, 30, len(data) // 2, len(data) - 1):
        with pytest.raises(SplitError):
            split_midi(data[:cut])


def test_gap_too_long_for_a_delta_time_raises_split_error() -> None:
    # Type 0, channels 1 and 2: channel 2's events sit between channel 1's notes, so the
    # channel-1 part would need one delta of 2**28 ticks, which MIDI cannot encode.
    step = encode_vlq((1 << 27) + 1)
    body = (b"\x00\x90\x3c\x40" + step + b"\x91\x3c\x40" + step + b"\x91\x3c\x00"
            + b"\x00\x90\x3c\x00\x00\xff\x2f\x00")
    data = (b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x00\x60"
            + b"MTrk" + struct.pack(">I", len(body)) + body)
    with pytest.raises(SplitError, match="variable-length"):
        split_midi(data)


def test_corrupt_event_in_scanned_track_raises_split_error() -> None:
    # Track 1 starts with a data byte and no running status to apply it to.
    data = (b"MThd\x00\x00\x00\x06\x00\x01\x00\x02\x01\xe0"
            b"MTrk\x00\x00\x00\x04\x00\xff\x2f\x00"
            b"MTrk\x00\x00\x00\x04\x00\x40\x40\x00")
    with pytest.raises(SplitError):
        split_midi(data)


def _channels_by_python_walk(track: bytes) -> list[int] | str:
    """The reference: note-on channels by iter_spans, or the SmfError message it raises."""
    found: set[int] = set()
    try:
        for _, status, _, stop in iter_spans(track):
            if status >> 4 == 0x9 and track[stop - 1]:
                found.add(status & 0x0F)
    except SmfError as exc:
        return str(exc)
    return sorted(found)


def _channels_by_compiled_walk(track: bytes) -> list[int] | str:
    try:
        return note_channels(track)
    except SmfError as exc:
        return str(exc)


TRACKS = [t for path in sorted((DATA.parent / "midi").glob("*.mid")) + POP909_LOCAL
          for t in read_smf(path.read_bytes()).tracks]


def test_compiled_note_channel_walk_matches_the_python_walk_on_real_tracks() -> None:
    assert len(TRACKS) >= 10
    for track in TRACKS:
        assert _channels_by_compiled_walk(track) == _channels_by_python_walk(track)
    # and a type-0 track with drums, bass and a velocity-0 note-on on a third channel
    two = mido.MidiFile(type=0, tracks=[mido.MidiTrack(
        [*_notes_on(9, 36), *_notes_on(1, 40), mido.Message("note_on", channel=5, note=60, velocity=0),
         mido.MetaMessage("end_of_track")])])
    assert note_channels(read_smf(_save(two)).tracks[0]) == [1, 9]


@pytest.mark.parametrize("body", [
    b"\x00\x99\x24\x40\x00\x24\x00\x00\xff\x2f\x00junk\x00\x95",  # running status; bytes after the end ignored
    b"\x83\x80\x80\x00\x91\x3c\x40",  # a 4-byte delta time is allowed
    b"\x81\x80\x80\x80\x00\x91\x3c\x40",  # a 5-byte one is not
    b"\x00\xff\x01\x81\x80\x80\x80\x00",  # nor a 5-byte meta length
    b"\x00\xff\x01\x83\x00" + b"x" * 384 + b"\x00\x92\x3c\x40",  # a long text, then a note
    b"\x00\xf0\x03\x7e\x7f\xf7\x00\x40\x40",  # sysex does not set running status
    b"\x00\x93\x3c\x40\x00\xf0\x01\xf7\x00\x3e\x40",  # ... nor clear it
    b"\x00\xf1\x00",  # a status byte no file may hold
    b"\x00\xff",  # a meta event cut before its type
    b"\x00\xff\x01\x05abc",  # ... or inside its text
    b"\x00\x94\x3c",  # a note cut short
    b"\x00\x94\x3c\x80",  # a status byte as velocity
    b"\x00\xc5\x10\x00\x95\x3c\x40\x00\xe6\x00\x40",  # program and pitch bend lengths
    b"\x80",  # a delta time cut short
])
def test_compiled_note_channel_walk_matches_the_python_walk_on_edge_cases(body: bytes) -> None:
    assert _channels_by_compiled_walk(body) == _channels_by_python_walk(body)


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_compiled_note_channel_walk_matches_the_python_walk_on_damaged_tracks(data: st.DataObject) -> None:
    """Same channels, or the same error, on real tracks with bytes changed, cut or inserted,
    and on events made of random bytes (meta and sysex lengths, running status, long VLQs)."""
    track = bytearray(data.draw(st.sampled_from(TRACKS)))
    for _ in range(data.draw(st.integers(0, 6))):
        pos = data.draw(st.integers(0, len(track)))
        action = data.draw(st.sampled_from(["set", "cut", "insert"]))
        if action == "cut":
            del track[pos:]
        elif action == "insert":
            track[pos:pos] = data.draw(st.binary(min_size=1, max_size=6))
        elif pos < len(track):
            track[pos] = data.draw(st.sampled_from([0x00, 0x7F, 0x80, 0x90, 0x99, 0xC0, 0xF0, 0xF7, 0xFF,
                                                    0x2F, data.draw(st.integers(0, 255))]))
    body = bytes(track)
    assert _channels_by_compiled_walk(body) == _channels_by_python_walk(body)
    random_body = data.draw(st.binary(max_size=64))
    assert _channels_by_compiled_walk(random_body) == _channels_by_python_walk(random_body)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_random_bytes_never_raise_anything_but_split_error(data: bytes) -> None:
    try:
        split_midi(b"MThd\x00\x00\x00\x06" + data)
    except SplitError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_real_files_never_raise_anything_but_split_error(data: st.DataObject) -> None:
    source = bytearray((DATA / "pop909_229.mid").read_bytes())
    header = read_smf(bytes(source))
    assert len(header.tracks) == 4
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(source) - 1))
        source[pos] = data.draw(st.integers(0, 255))
    try:
        parts = split_midi(bytes(source))
    except SplitError:
        return
    for part in parts:
        assert read_smf(part.data).tracks  # every part is at least a well-formed SMF


@pytest.mark.parametrize("path", POP909_LOCAL, ids=lambda p: p.name)
def test_pop909_merged_to_type0_splits_back_by_channel(path: Path) -> None:
    source = mido.MidiFile(path)
    merged = _save(mido.MidiFile(type=0, ticks_per_beat=source.ticks_per_beat,
                                 tracks=[mido.merge_tracks(source.tracks)]))
    parts = split_midi(merged)
    # POP909 puts MELODY, BRIDGE, PIANO on channels 1-3, all with program 0 (piano).
    assert [(p.label, p.index) for p in parts] == [("Piano", 0), ("Piano_2", 1), ("Piano_3", 2)]
    tracks = symusic.Score.from_midi(path.read_bytes()).tracks
    source_timing = _timing(symusic.Score.from_midi(path.read_bytes()))
    for part, src_track in zip(parts, tracks):
        score = symusic.Score.from_midi(part.data)
        assert [_notes(t) for t in score.tracks] == [_notes(src_track)]
        assert _timing(score) == source_timing


channel_events = st.tuples(
    st.integers(0, 5000),  # delta ticks
    st.sampled_from([0x80, 0x90, 0xA0, 0xB0, 0xC0, 0xD0, 0xE0]),
    st.integers(0, 15),
    st.integers(0, 127),
    st.integers(0, 127),
)


@given(st.lists(channel_events, max_size=40))
def test_write_track_and_iter_events_round_trip(raw: list[tuple[int, int, int, int, int]]) -> None:
    events, tick = [], 0
    for delta, kind, channel, a, b in raw:
        tick += delta
        data = bytes((kind | channel, a)) if kind in (0xC0, 0xD0) else bytes((kind | channel, a, b))
        events.append(Event(tick, kind | channel, data))
    decoded = list(iter_events(write_track(events)))
    assert [(e.tick, e.data) for e in decoded[:-1]] == [(e.tick, e.data) for e in events]
    assert decoded[-1].meta_type == 0x2F
    assert decoded[-1].tick == tick
    # The same track read by mido gives the same delta times.
    midi = mido.MidiFile(file=io.BytesIO(write_smf(0, 96, [write_track(events)])))
    assert sum(m.time for m in midi.tracks[0]) == tick
