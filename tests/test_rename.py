"""Tests for midid.stages.rename: template rendering and validation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from midid.stages.rename import PLACEHOLDERS, format_key, render_name, validate_template
from midid.stages.sanitize import sanitize_filename

DEFAULT = "{bpm}bpm_{key}_{tags}"


def test_default_template_example() -> None:
    fields = {"bpm": 128.0, "key_tonic": "C", "key_mode": "major", "tags": ["bass", "loop"]}
    assert render_name(DEFAULT, fields) == "128bpm_Cmaj_bass_loop.mid"


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"bpm": 127.6, "key": "Am", "tags": ["a", "b", "c", "d"]}, "128bpm_Amin_a_b_c.mid"),
        ({"bpm": 90, "key_tonic": "F#", "key_mode": "minor"}, "90bpm_Gbmin.mid"),
        ({"key_tonic": "Eb", "key_mode": "major", "tags": ["pad"]}, "Ebmaj_pad.mid"),
        ({"bpm": 140}, "140bpm.mid"),
        ({"bpm": float("nan"), "tags": "dark"}, "dark.mid"),
        ({}, "untitled.mid"),
    ],
)
def test_missing_values_leave_no_stray_text(fields: dict, expected: str) -> None:
    assert render_name(DEFAULT, fields) == expected


def test_text_glued_to_a_missing_value_goes_up_to_the_nearest_separator() -> None:
    assert render_name("{bpm}bpm-loop_{key}", {"key": "Am"}) == "loop_Amin.mid"
    assert render_name("{bpm}bpm_key{key}", {"bpm": 128}) == "128bpm.mid"
    assert render_name("{bpm}_x_abc{key}", {"bpm": 128}) == "128_x.mid"  # only the glued "abc" goes
    assert render_name("{bpm}bpm_{key}", {"bpm": 0, "key": "Am"}) == "Amin.mid"  # no tempo is not 0 BPM


def test_other_placeholders_and_sanitizing() -> None:
    fields = {"pack": "Trap Pack", "name": "Dark Keys (v2).MIDI", "category": "Keys"}
    assert render_name("{pack}-{category}-{name}", fields) == "Trap_Pack-Keys-Dark_Keys_v2.mid"
    assert render_name("{name}.mid", {"name": "a"}) == "a.mid"
    assert render_name("{category}_{name}", {"name": "CON"}) == "CON_.mid"


@pytest.mark.parametrize(
    ("tonic", "mode", "expected"),
    [
        ("C", "major", "Cmaj"),
        ("A", "minor", "Amin"),
        ("Am", "", "Amin"),
        ("Gb:maj", "", "Gbmaj"),
        ("C#", "min", "Dbmin"),
        ("d", "Dorian", "Ddor"),
        (9, "minor", "Amin"),
        (None, "major", ""),
        ("C", "M", "Cmaj"),  # the case of M and m is the mode
        ("A", "MINOR", "Amin"),
        ("H", "major", ""),
    ],
)
def test_format_key(tonic: object, mode: str, expected: str) -> None:
    assert format_key(tonic, mode) == expected


def test_unknown_placeholder_names_it_and_the_allowed_ones() -> None:
    with pytest.raises(ValueError) as info:
        validate_template("{bpm}_{genre}")
    message = str(info.value)
    assert "{genre}" in message
    for name in PLACEHOLDERS:
        assert name in message
    with pytest.raises(ValueError, match="genre"):
        render_name("{genre}", {"genre": "trap"})


@pytest.mark.parametrize("template", ["{bpm:03d}", "{key!r}", "{bpm", "{}", "{0}"])
def test_bad_templates_are_rejected(template: str) -> None:
    with pytest.raises(ValueError):
        validate_template(template)


def test_valid_templates_pass() -> None:
    for template in (DEFAULT, "{pack}/{name}", "plain", "{category}-{name}_{bpm}"):
        validate_template(template)


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "bpm": st.floats(allow_nan=True, allow_infinity=True),
            "key": st.text(max_size=8),
            "tags": st.lists(st.text(max_size=12), max_size=5),
            "category": st.text(max_size=20),
            "name": st.text(max_size=80),
            "pack": st.text(max_size=40),
        },
    )
)
def test_rendered_names_are_always_sanitized(fields: dict) -> None:
    result = render_name("{pack}_{category}_{name}_{bpm}bpm_{key}_{tags}", fields)
    assert result == sanitize_filename(result)
    assert result.endswith(".mid")
