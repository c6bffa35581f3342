"""tools.realdev --variants: which folders it runs, and its errors (the scans live in ../shared)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from l3edge.errors import UsageError
from tools.realdev import _variant_dirs, main


def test_variant_folders_take_the_truth_of_their_scan(tmp_path: Path) -> None:
    for name in ("abdomen__head-20", "abdomen__every2", "other__foot-40", "notes"):
        (tmp_path / name).mkdir()
    (tmp_path / "abdomen__file").write_text("")
    got = _variant_dirs(tmp_path, {"abdomen": {"has_l3": True}})
    assert [d.name for d in got] == ["abdomen__every2", "abdomen__head-20"]
    with pytest.raises(UsageError, match="no SCAN__VARIANT"):
        _variant_dirs(tmp_path, {"chest": {"has_l3": False}})


def test_missing_variants_folder_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "truth.json").write_text(json.dumps({"abdomen": {"has_l3": True}}))
    code = main(["--root", str(tmp_path), "--variants", str(tmp_path / "absent")])
    err = capsys.readouterr().err.strip()
    assert code == UsageError.exit_code and "is not a folder" in err and "\n" not in err
