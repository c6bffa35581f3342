"""PredictOptions: one value for the per-scan options (the API's keywords, batch.run's dict, the CLI)."""

from __future__ import annotations

import pickle

import pytest

from l3edge.errors import UsageError
from l3edge.options import PredictOptions


def test_of_reads_a_mapping_and_changes_on_top() -> None:
    opts = PredictOptions.of({"qa_dir": "/q", "level": "l1"}, export_neighbours=2)
    assert opts == PredictOptions(qa_dir="/q", level="L1", export_neighbours=2)
    assert PredictOptions.of(opts) is opts and PredictOptions.of(None) == PredictOptions()
    assert PredictOptions.of(opts, level="T12").level == "T12" and opts.level == "L1"
    assert pickle.loads(pickle.dumps(opts)) == opts  # it travels to worker processes


def test_series_all_is_a_field_not_a_magic_uid() -> None:
    assert PredictOptions.of({"series_uid": "all"}) == PredictOptions(all_series=True)
    with pytest.raises(UsageError, match="not both"):
        PredictOptions(series_uid="1.2.3", all_series=True)


@pytest.mark.parametrize(
    ("given", "match"),
    [
        ({"export_neighbours": -1}, "export_neighbours"),
        ({"threads": 0}, "threads"),
        ({"qa": "/q"}, "unknown predict option"),
    ],
)
def test_bad_options_are_usage_errors(given: dict, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        PredictOptions.of(given)


def test_kwargs_are_predicts_keywords_that_differ_from_the_defaults() -> None:
    assert PredictOptions().kwargs() == {}
    assert PredictOptions(all_series=True, qa_dir="/q", export_neighbours=1).kwargs() == {
        "qa_dir": "/q",
        "export_neighbours": 1,
    }
