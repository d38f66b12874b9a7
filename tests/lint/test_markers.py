"""Marker recognition: only real `--` comment tokens, exact shape, non-placeholder reason."""

from __future__ import annotations

import pytest

from spectral_core.compat.markers import scan_markers


def test_valid_marker_reason_and_offset() -> None:
    """A valid marker yields its gate, trimmed reason and the offset of its comment token."""
    sql = "SELECT 1;\n-- compat: breaking (reason:  column unused since v3  )\n"
    scan = scan_markers(sql)
    assert [(m.gate, m.reason, m.offset) for m in scan.markers] == [
        ("compat", "column unused since v3", 10)
    ]
    assert scan.near_misses == ()


def test_reason_may_contain_parentheses() -> None:
    """A reason with its own parentheses is kept whole (the last `)` closes the marker)."""
    scan = scan_markers("-- compat: breaking (reason: dropped (see ADR 0007))\n")
    assert scan.reason("compat") == "dropped (see ADR 0007)"


def test_locking_marker_is_its_own_gate() -> None:
    """The locking marker is recognised separately from the compat marker."""
    scan = scan_markers("-- locking: accepted (reason: 40 rows)\n")
    assert scan.reason("locking") == "40 rows"
    assert scan.reason("compat") is None


@pytest.mark.parametrize(
    "comment",
    [
        "-- compat: breaking (reason: )",
        "-- compat: breaking (reason: n/a)",
        "-- compat: breaking (reason: <reason>)",
        "-- compat: breaking (reason: ---)",
        "-- compat breaking (reason: unused)",
        "-- compat: breaking reason: unused",
        "-- compatt: breaking (reason: unused)",
        "-- Compat: Breaking (reason: unused)",
        "--compat:breaking(reason:unused",
        "/* compat: breaking (reason: unused) */",
        "-- locking: accept (reason: small)",
    ],
)
def test_near_misses(comment: str) -> None:
    """Each near-miss spelling is reported and waives nothing."""
    scan = scan_markers(comment + "\nSELECT 1;")
    assert scan.markers == ()
    assert len(scan.near_misses) == 1


@pytest.mark.parametrize(
    "comment",
    [
        "-- keep this backward compatible",
        "-- compatibility: see docs",
        "-- breaking news: nothing",
        "/* reason: performance */",
    ],
)
def test_ordinary_comments_are_not_markers(comment: str) -> None:
    """Comments that merely mention the words are neither markers nor near misses."""
    scan = scan_markers(comment + "\nSELECT 1;")
    assert scan.markers == () and scan.near_misses == ()


def test_marker_text_in_literals_is_ignored() -> None:
    """Marker text inside a string literal, an E-string or a dollar-quoted body is no comment."""
    sql = (
        "SELECT '-- compat: breaking (reason: a)', E'-- compat: breaking (reason: b)',"
        " $x$ -- compat: breaking (reason: c) $x$;"
    )
    scan = scan_markers(sql)
    assert scan.markers == () and scan.near_misses == ()


def test_non_ascii_offsets_are_characters() -> None:
    """Offsets are character offsets, so positions stay right after non-ASCII text."""
    sql = "SELECT 'héllo';\n-- compat: breaking (reason: ünused)\n"
    scan = scan_markers(sql)
    assert sql[scan.markers[0].offset :].startswith("-- compat")
