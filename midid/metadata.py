"""Metadata that pack authors put into file, folder and archive names.

Producers' packs encode tempo, key and role in names (`Trap Kit 140 BPM/808 Am loop.mid`).
These words are priors for the analysis stage: they are recorded with their source
(`filename`, `folder`, `archive`) and never overwritten by later stages.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import PurePath
from typing import Sequence

# Tempo words: "128bpm", "128 BPM", "bpm128", or a bare 2–3 digit number between separators
# ("_128_", "-92-", "(C minor, 128)") that falls in the range of musical tempi.
_BPM_WORD = re.compile(r"(?<![0-9.])(\d{2,3}(?:\.\d+)?)\s*-?\s*bpm(?![a-z])|bpm\s*[-_ ]?\s*(\d{2,3})(?!\d)", re.I)
_BPM_BARE = re.compile(r"(?:^|[\s_\-\[\(,])(\d{2,3})(?=$|[\s_\-\]\),])")
BPM_RANGE = (40.0, 300.0)

_NOTE = r"([A-G])([#b♯♭]|sharp|flat)?"
# Key words: "Cmaj", "C#m", "Am", "F minor", "Bb major", "Ebmin", "D# Minor", "G#-min", "c-moll".
_KEY = re.compile(
    r"(?:^|[\s_\-\[\(.,])" + _NOTE + r"\s*[-_ ]?\s*"
    r"(major|minor|maj|min|moll|dur|m)?(?=$|[\s_\-\]\).,0-9])",
    re.I,
)
_FLAT_TO_SHARP = {"Cb": "B", "Db": "C#", "Eb": "D#", "Fb": "E", "Gb": "F#", "Ab": "G#", "Bb": "A#"}
_SHARP_FIX = {"E#": "F", "B#": "C"}
# Key tonics as midid spells them everywhere (sharps); the analysis imports them from here.
TONICS = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")

# Words that name a role, instrument or genre; each maps to the tag we record.
_TAG_WORDS: dict[str, str] = {
    **{w: "kick" for w in ("kick", "kicks", "kik", "bd", "bassdrum")},
    **{w: "snare" for w in ("snare", "snares", "snr", "sd", "rim", "rimshot")},
    **{w: "clap" for w in ("clap", "claps")},
    **{w: "hat" for w in ("hat", "hats", "hihat", "hihats", "hh", "oh", "ch")},
    **{w: "cymbal" for w in ("cymbal", "cymbals", "crash", "ride", "china", "splash")},
    **{w: "tom" for w in ("tom", "toms")},
    **{w: "perc" for w in ("perc", "percussion", "shaker", "conga", "bongo", "tambourine", "cowbell")},
    **{w: "drums" for w in ("drum", "drums", "beat", "beats", "groove", "grooves", "kit", "break", "breaks")},
    **{w: "bass" for w in ("bass", "bassline", "basslines", "sub", "808", "reese")},
    **{w: "lead" for w in ("lead", "leads", "synth")},
    **{w: "melody" for w in ("melody", "melodies", "mel", "hook", "hooks", "topline", "riff", "riffs")},
    **{w: "chord" for w in ("chord", "chords", "stab", "stabs")},
    **{w: "progression" for w in ("progression", "progressions", "prog")},
    **{w: "pad" for w in ("pad", "pads", "strings", "string")},
    **{w: "arp" for w in ("arp", "arps", "arpeggio")},
    **{w: "piano" for w in ("piano", "keys", "rhodes", "ep")},
    **{w: "pluck" for w in ("pluck", "plucks")},
    **{w: "fx" for w in ("fx", "sfx", "riser", "risers", "sweep", "impact", "noise")},
    **{w: "loop" for w in ("loop", "loops")},
    **{w: "fill" for w in ("fill", "fills")},
    **{w: "oneshot" for w in ("oneshot", "one-shot")},
    **{
        w: w
        for w in (
            "trap", "drill", "hiphop", "boombap", "lofi", "house", "techno", "trance", "dnb",
            "dubstep", "edm", "rnb", "soul", "funk", "jazz", "pop", "rock", "reggae", "reggaeton",
            "afrobeat", "afrobeats", "latin", "samba", "disco", "garage", "ambient", "cinematic",
            "gospel", "blues", "country", "metal", "dancehall", "amapiano", "phonk",
        )
    },
    "hip-hop": "hiphop", "hip": "hiphop", "drumandbass": "dnb", "lo-fi": "lofi",
}
_WORD = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)?", re.I)
_ARCHIVE_SUFFIX = re.compile(r"\.(zip|7z|rar|tar|tgz|tbz2|txz|tar\.(gz|bz2|xz|zst))$", re.I)
_MIDI_SUFFIX = re.compile(r"\.(midi?|kar|rmi)$", re.I)


@dataclass(frozen=True)
class Tag:
    tag: str
    source: str  # "filename" | "folder" | "archive"


@dataclass(frozen=True)
class NameMeta:
    bpm: float | None
    key_tonic: str | None  # sharps: "C#", never "Db"
    key_mode: str | None  # "major" | "minor"
    tags: tuple[Tag, ...]
    # The tempo is written as one ("140bpm", "BPM 140"), not read off a bare number: strong
    # enough to beat a file's 120 BPM placeholder tempo (see analysis.analyze_bytes).
    bpm_stated: bool = False


def bpm_tag(bpm: float) -> str:
    """The tag the import writes for a name's BPM ("bpm:140"); the analysis reads it back."""
    return f"bpm:{bpm:g}"


def bpm_of_tag(tag: str) -> float | None:
    """The BPM of a `bpm_tag`; None for any other tag."""
    if not tag.startswith("bpm:"):
        return None
    try:
        return float(tag[4:])
    except ValueError:
        return None


def bpm_stated_tag(bpm: float) -> str:
    """The tag beside `bpm_tag` when the name states the tempo as one (`NameMeta.bpm_stated`)."""
    return f"bpm-stated:{bpm:g}"


def key_tag(tonic: str, mode: str) -> str:
    """The tag the import writes for a key a name states ("key:Am", "key:C#"): the analysis
    reads it back (`key_of_tag`) as the key's prior."""
    return f"key:{tonic}{'m' if mode == 'minor' else ''}"


def key_of_tag(tag: str) -> tuple[str, str] | None:
    """(tonic, mode) of a `key_tag`, whatever its case; None for any other tag."""
    if not tag.lower().startswith("key:") or len(tag) < 5:
        return None
    word = tag[4:]
    minor = len(word) > 1 and word[-1] in "mM" and word[:-1].upper() in TONICS
    tonic = (word[:-1] if minor else word).upper()
    return (tonic, "minor" if minor else "major") if tonic in TONICS else None


def _stem(name: str) -> str:
    return _ARCHIVE_SUFFIX.sub("", _MIDI_SUFFIX.sub("", name))


def stated_bpm(text: str) -> float | None:
    """A tempo a name states with the word: "128bpm", "128 BPM", "bpm128"."""
    for match in _BPM_WORD.finditer(text):
        value = float(match.group(1) or match.group(2))
        if BPM_RANGE[0] <= value <= BPM_RANGE[1]:
            return value
    return None


def bpm_from_name(text: str) -> float | None:
    """Tempo written in a name; an explicit `bpm` word beats a bare number."""
    stated = stated_bpm(text)
    if stated is not None:
        return stated
    bare = [float(match.group(1)) for match in _BPM_BARE.finditer(text)]
    bare = [value for value in bare if BPM_RANGE[0] <= value <= BPM_RANGE[1]]
    # Of several numbers the last is the tempo: names give an index or a take early and the
    # tempo and key late ("75 Funk 95", Groove's "180_rock_50_beat"). A lone number below 60
    # is more often an index ("Loop 45") than a tempo.
    if len(bare) > 1 or (bare and bare[0] >= 60):
        return bare[-1]
    return None


def key_from_name(text: str) -> tuple[str, str] | None:
    """(tonic with sharps, mode) from a key word such as `Am`, `C#min`, `F minor`, `Bb`.

    A bare letter ("Loop A", "Pad_F") is too ambiguous — variations are lettered too — so
    without a mode word only a note with an accidental counts (as major). `m` alone means
    minor only after a capital letter, so words like "em" in lower-case names do not count.
    """
    for match in _KEY.finditer(text):
        letter, accidental, mode = match.group(1), match.group(2), match.group(3)
        if mode is None and accidental is None:
            continue
        if mode == "m" and not letter.isupper() or mode == "M":
            continue
        tonic = letter.upper()
        acc = (accidental or "").lower()
        if acc in ("#", "♯", "sharp"):
            tonic += "#"
        elif acc in ("b", "♭", "flat"):
            tonic += "b"
        tonic = _SHARP_FIX.get(tonic, _FLAT_TO_SHARP.get(tonic, tonic))
        minor = mode is not None and mode.lower() in ("m", "min", "minor", "moll")
        return tonic, "minor" if minor else "major"
    return None


def tags_from_name(text: str) -> list[str]:
    """Known role/instrument/genre words in a name, in order of appearance, each once."""
    found: list[str] = []
    spaced = re.sub(r"([a-z])([A-Z])", r"\1 \2", text)
    for word in _WORD.findall(spaced.replace("_", " ")):
        word = word.lower()
        whole = _TAG_WORDS.get(word) or _TAG_WORDS.get(word.replace("-", ""))
        candidates = [whole] if whole else [_TAG_WORDS.get(part) for part in word.split("-")]
        for tag in candidates:
            if tag is not None and tag not in found:
                found.append(tag)
    return found


@functools.lru_cache(maxsize=4096)
def _container_metadata(archives: tuple[str, ...], folders: tuple[str, ...]
                        ) -> tuple[float | None, bool, tuple[str, str] | None, tuple[Tag, ...]]:
    """BPM (and whether it is stated as one), key and tags of the folders and archives around
    a file; thousands of files share the same containers, so this is computed once per
    container path."""
    containers = [(name, "archive") for name in archives] + [(name, "folder") for name in folders]
    bpm: float | None = None
    stated = False
    key: tuple[str, str] | None = None
    for name, _source in reversed(containers):
        if bpm is None:
            bpm = bpm_from_name(_stem(name))
            stated = bpm is not None and stated_bpm(_stem(name)) == bpm
        if key is None:
            key = key_from_name(_stem(name))
    tags: list[Tag] = []
    seen: set[str] = set()
    for name, source in containers:
        for t in tags_from_name(_stem(name)):
            if t not in seen:
                seen.add(t)
                tags.append(Tag(t, source))
    return bpm, stated, key, tuple(tags)


def name_metadata(filename: str, folders: Sequence[str] = (), archives: Sequence[str] = ()) -> NameMeta:
    """Metadata from a file name and the folders and archives it was found in.

    The file name wins over its folders for BPM and key (a folder called "140 BPM" holding
    "loop 90bpm.mid" means 90), the nearest folder over farther ones.
    """
    stem = _stem(PurePath(filename).name)
    c_bpm, c_stated, c_key, c_tags = _container_metadata(tuple(archives), tuple(folders))
    bpm = bpm_from_name(stem)
    stated = bpm is not None and stated_bpm(stem) == bpm
    key = key_from_name(stem)
    tags: list[Tag] = [Tag(t, "filename") for t in tags_from_name(stem)]
    seen = {t.tag for t in tags}
    tags += [t for t in c_tags if t.tag not in seen]
    if bpm is None:
        bpm, stated = c_bpm, c_stated
    key = c_key if key is None else key
    return NameMeta(
        bpm=bpm,
        key_tonic=key[0] if key else None,
        key_mode=key[1] if key else None,
        tags=tuple(tags),
        bpm_stated=stated,
    )
