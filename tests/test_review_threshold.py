"""The review-threshold rules of tools.evaluate --choose-review-below (tools.summary)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tools.summary import choose_review_below, choose_review_pooled, choose_review_youden


def _scan(conf: float, right: bool, other: bool = False, variants: list[str] | None = None) -> dict[str, Any]:
    return {
        "found": True,
        "in_view": True,
        "in_body": right,
        "confidence": conf,
        "review_other": other,
        "outcome": "hit",
        "variants": variants or [],
    }


def test_youden_takes_the_middle_of_the_gap_that_separates_wrong_from_right() -> None:
    scans = [_scan(c, True) for c in (0.2, 0.85, 0.9, 0.95, 0.97)] + [
        _scan(c, False) for c in (0.1, 0.3, 0.75)
    ]
    got = choose_review_youden(scans)
    assert got["review_below"] == round((0.75 + 0.85) / 2, 4)
    assert (got["right_flagged"], got["wrong_flagged"]) == (1, 3)
    # The normal-misses rule puts the threshold above the worst miss instead.
    assert choose_review_below(scans)["review_below"] == 0.77


def test_youden_counts_other_flags_and_a_wrong_level_not_in_view() -> None:
    scans = [_scan(c, True) for c in (0.6, 0.7, 0.9)] + [_scan(0.95, False, other=True)]
    not_in_view = {**_scan(0.4, False), "in_view": False, "in_body": None}
    got = choose_review_youden([*scans, not_in_view])
    # The high-confidence miss is flagged anyway; the one not in view is wrong and lies below every right one.
    assert got["wrong"] == 2 and got["wrong_flagged"] == 2 and got["right_flagged"] == 0
    assert 0.4 < got["review_below"] <= 0.6


def test_youden_without_both_kinds_flags_nothing() -> None:
    assert choose_review_youden([_scan(0.5, True)])["review_below"] == 0.0


def _real(conf: float, inside: bool = True, has_l3: bool = True, other: bool = False) -> dict[str, Any]:
    return {"found": True, "has_l3": has_l3, "inside": inside, "confidence": conf, "review_other": other}


def test_pooled_keeps_the_threshold_below_real_right_answers() -> None:
    # Phantoms: right answers near 1, one wrong answer just under them that phantoms alone would flag.
    scans = [_scan(c, True) for c in (0.3, 0.97, 0.98, 0.99, 0.99, 0.995)] + [
        _scan(c, False) for c in (0.2, 0.6, 0.96)
    ]
    alone = choose_review_youden(scans)
    assert alone["review_below"] == round((0.96 + 0.97) / 2, 4)
    # Real scans: right answers at 0.90-0.95, where that threshold would flag every one.
    real = [_real(c) for c in (0.9, 0.92, 0.95)]
    got = choose_review_pooled(scans, real)
    assert got["review_below"] == round((0.6 + 0.9) / 2, 4)
    assert (got["right_real_flagged"], got["right_phantoms_flagged"]) == (0, 1)
    assert (got["wrong"], got["wrong_flagged"]) == (3, 2)


def test_pooled_counts_real_wrong_answers_and_other_flags() -> None:
    scans = [_scan(c, True) for c in (0.8, 0.9)] + [_scan(0.5, False)]
    real = [_real(0.85), _real(0.7, inside=False), _real(0.95, has_l3=False, other=True)]
    got = choose_review_pooled(scans, real)
    # wrong: the phantom at 0.5, the real miss at 0.7 and L3 found in a scan without it (flagged anyway)
    assert got["wrong"] == 3 and got["wrong_flagged"] == 3
    assert 0.7 < got["review_below"] <= 0.8
    assert choose_review_pooled([_scan(0.5, True)], [])["review_below"] == 0.0


def test_evaluate_reads_the_real_rows_before_evaluating(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tools.evaluate import main

    bad = tmp_path / "real.json"
    bad.write_text("not json")
    code = main(
        ["no-such-model.xml", "--cache", str(tmp_path), "--choose-review-below", "--real-variants", str(bad)]
    )
    assert code == 2 and capsys.readouterr().err.startswith(f"error: cannot read {bad}")
