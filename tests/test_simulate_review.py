"""tools.simulate_review: a perfect reviewer, simulated from phantom truth, writes the corrections.csv."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from l3edge import batch
from l3edge.corrections import read_corrections
from tools.simulate_review import main


def test_simulated_review(phantom_cohort: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    paths = [str(p) for p in phantom_cohort]
    list(batch.run(paths, workers=1, options={"qa_dir": str(tmp_path / "qa")}, out=out))
    rows = [json.loads(ln) for ln in out.read_text().splitlines()]
    by = {Path(d["path"]).name: d for d in rows}
    g = json.loads(Path(by["ph2"]["qa_path"]).with_suffix(".json").read_text())
    row = g["z_mm"].index(min(g["z_mm"], key=lambda z: abs(z - by["ph2"]["z_mm"])))
    wrong = row + 8  # 40 mm off: outside the L3 body
    by["ph2"]["z_mm"] = by["ph2"]["levels"]["L3"]["z_mm"] = g["z_mm"][wrong]
    out.write_text("".join(json.dumps(d) + "\n" for d in rows))

    corrections = tmp_path / "corrections.csv"
    assert main([str(out), "--out", str(corrections)]) == 0
    with open(corrections, newline="") as f:
        got = {Path(r["path"]).name: r for r in csv.DictReader(f)}
    assert {n: r["decision"] for n, r in got.items()} == {
        "ph1": "accept",
        "ph2": "correct",
        "ph3": "reject",
        "ph4": "accept",
    }
    truth = json.loads((phantom_cohort[1] / "truth.json").read_text())
    assert abs(float(got["ph2"]["z_mm"]) - truth["l3_z_mm"]) <= truth["slice_spacing_mm"] / 2 + 1e-6
    k = g["z_mm"].index(float(got["ph2"]["z_mm"]))
    assert int(got["ph2"]["slice_index"]) == g["slice_index"][k]
    assert got["ph2"]["sop_instance_uid"] == g["sop_instance_uid"][k]
    corr = read_corrections(corrections, out)  # the page's format, checked as the page's file is
    assert len(corr.decisions) == 4
    assert main([str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "x.csv")]) == 3
