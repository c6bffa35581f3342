"""Retraining on real-data layouts: a generated npz in the public L3 dataset's layout through build_cache,
train, evaluate, cross-validation and export; a generated (pruned) checkpoint fine-tuned, re-exported and
quantized; the model card's SHA-256 of the shipped checkpoint."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch_pruning")
pytest.importorskip("nncf")

from l3edge import L3Locator  # noqa: E402
from l3edge.series import Projection  # noqa: E402
from tests.tiny_model import TINY_SPACE  # noqa: E402
from tools import build_cache as bc  # noqa: E402
from tools import evaluate as ev  # noqa: E402
from tools import export as export_mod  # noqa: E402
from tools import quantize as quantize_mod  # noqa: E402
from tools import train as tr  # noqa: E402
from tools.checkpoint import save_checkpoint, sha256_file  # noqa: E402
from tools.data import load_cache  # noqa: E402
from tools.folds import FOLDS_NAME  # noqa: E402
from tools.models import build_model  # noqa: E402
from tools.phantom_npz import write_phantom_npz  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--widths", "4", "8", "8", "8", "--hidden", "8", "--device", "cpu", "--threads", "1", "--no-augment"]


def _npz(tmp_path: Path, n: int = 8) -> Path:
    path = tmp_path / "l3_dataset.npz"
    write_phantom_npz(path, n, 1, {"abdomen": 3.0, "chest": 1.0}, 1.0, (2.0, 3.0), 2)
    return path


def _first_mip(npz: Path) -> Projection:
    with np.load(npz, allow_pickle=True) as z:
        mip, sp = z["images_f"][0][::-1].astype(np.float32), z["spacings"][0]
    return Projection(mip, -float(sp[2]) * np.arange(mip.shape[0]), float(sp[0]))


def test_npz_build_train_evaluate_crossvalidate_export(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    npz, cache = _npz(tmp_path), tmp_path / "cache"
    assert bc.main([str(npz), "--out", str(cache), "--head-last", "--split", "--folds", "2", "--quiet"]) == 0
    ckpt = tmp_path / "cnn4.pt"
    common = ["--cache", str(cache), "--batch", "4"]
    assert tr.main([*common, "--out", str(ckpt), "--steps", "12", "--val-frac", "0.25", *TINY]) == 0
    assert torch.load(ckpt, weights_only=False)["widths"] == [4, 8, 8, 8]

    capsys.readouterr()
    out = tmp_path / "rep.json"
    assert ev.main([str(ckpt), "--cache", str(cache), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    rep = json.loads(out.read_text())
    s, n_l3 = rep["summary"], sum(r["in_view"] for r in rep["scans"])
    hits = sum(r["outcome"] == "hit" for r in rep["scans"])
    assert s["n_in_view"] == n_l3 == 6 and s["error_mm"]["n"] == hits
    assert f"{n_l3} with the level in view ({hits} found, {n_l3 - hits} not found)" in text
    assert "None of 0" not in text and "inside the vertebral body: not measurable" in text
    assert "variant none" not in text  # no breakdown rows for scans without variants
    assert sum(line.startswith("| l3_dataset-") for line in text.splitlines()) == 8  # per-scan rows
    if hits:
        assert f"error over the {hits} found scans" in text

    cv = tmp_path / "cv.json"
    args = ["--folds", "2", *common, "--steps", "2", "--val-frac", "0", *TINY]
    chain = ["--prune", "0.5", "--prune-steps", "1", "--int8", "--calib-windows", "8"]
    assert ev.main([*args, *chain, "--json", str(cv)]) == 0
    rep = json.loads(cv.read_text())
    folds = json.loads((cache / FOLDS_NAME).read_text())["folds"]
    assert rep["fold_ids"] == folds and FOLDS_NAME in rep["folds_from"]
    for r in rep["scans"]:
        assert r["id"] in folds[r["fold"]]
    assert list(rep["stages"]) == ["cnn4", "cnn4 pruned 0.5, fine-tuned", "cnn4 pruned 0.5, fine-tuned, INT8"]
    assert [f["prune_train"]["steps_done"] for f in rep["folds"]] == [1, 1]
    assert len(rep["table"].splitlines()) == 5
    capsys.readouterr()
    assert ev.main([*args, "--folds", "3"]) == 2
    assert "--folds 2" in capsys.readouterr().err

    xml = tmp_path / "ir" / "mine.xml"
    export_mod.main([str(ckpt), "--out", str(xml)])
    result = L3Locator.load(xml).predict_projection(_first_mip(npz))
    assert result.ok and result.model["name"] == "l3edge-cnn4-fp32"


def _pruned_checkpoint(tmp_path: Path) -> Path:
    """A filter-pruned VGG16 checkpoint (tiny widths, tiny model space): a stand-in for the shipped one."""
    from tools.prune import prune_checkpoint

    torch.manual_seed(0)
    parent = tmp_path / "parent.pt"
    save_checkpoint(parent, build_model("vgg16", 32, 16, widths=[8] * 13, hidden=8), "vgg16", TINY_SPACE)
    return prune_checkpoint(parent, 0.5, tmp_path / "shipped.pt", round_to=2)


def test_generated_checkpoint_fine_tunes_and_reexports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shipped = _pruned_checkpoint(tmp_path)
    before = torch.load(shipped, weights_only=False)
    assert before["widths"] == [4] * 13 and before["pruning"]["ratio"] == 0.5
    npz, cache = _npz(tmp_path, n=6), tmp_path / "cache"
    assert bc.main([str(npz), "--out", str(cache), "--like", str(shipped), "--head-last", "--quiet"]) == 0

    ft = tmp_path / "ft.pt"
    base = ["--init", str(shipped), "--cache", str(cache), "--out", str(ft), "--steps", "3", "--batch", "2"]
    assert (
        tr.main([*base, "--val-frac", "0", "--device", "cpu", "--threads", "1"]) == 0
    )  # no --arch: --init's
    after = torch.load(ft, weights_only=False)
    assert after["arch"] == "vgg16" and (after["widths"], after["hidden"]) == (
        before["widths"],
        before["hidden"],
    )
    assert after["pruning"]["ratio"] == 0.5 and after["parent_sha256"] == sha256_file(shipped)
    changed = [not torch.equal(a, after["state_dict"][k]) for k, a in before["state_dict"].items()]
    assert any(changed)
    space, scans = load_cache(cache)  # the starting point is validated too: no step beats it here (lr 0)
    cfg = {"steps": 2, "lr": 0.0, "val_frac": 0.34, "batch": 2, "eval_every": 1, "device": "cpu"}
    _, m = tr.train_on(scans, space, "vgg16", init=str(shipped), **cfg)
    assert [h["step"] for h in m["history"]] == [0, 1, 2] and m["best_step"] == 0

    xml, int8 = tmp_path / "ir" / "ft.xml", tmp_path / "ir" / "ft_int8.xml"
    export_mod.main([str(ft), "--out", str(xml), "--name", "mine", "--version", "0.3.0-ft"])
    quantize_mod.main([str(xml), "--cache", str(cache), "--out", str(int8), "--subset", "8"])
    locator = L3Locator.load(int8)
    assert locator.metadata.precision == "int8" and locator.metadata.parent_sha256 == sha256_file(ft)
    assert locator.predict_projection(_first_mip(npz)).ok

    cv = tmp_path / "cv.json"
    args = ["--folds", "2", "--init", str(shipped), "--cache", str(cache), "--steps", "1", "--batch", "2"]
    args += ["--val-frac", "0", "--threads", "1", "--int8", "--calib-windows", "8"]
    assert ev.main([*args, "--json", str(cv)]) == 0
    stages = list(json.loads(cv.read_text())["stages"])
    assert stages == ["vgg16 fine-tuned from shipped.pt", "vgg16 fine-tuned from shipped.pt, INT8"]

    other = tmp_path / "other"  # a cache in another model space: the error says how to build the right one
    assert bc.main([str(npz), "--out", str(other), "--head-last", "--quiet"]) == 0
    capsys.readouterr()
    assert (
        tr.main([*base[:2], "--cache", str(other), "--out", str(tmp_path / "x.pt"), "--device", "cpu"]) == 2
    )
    assert f"--like {shipped}" in capsys.readouterr().err
    assert tr.main(["--init", str(tmp_path / "nope.pt"), "--cache", str(cache), "--out", str(ft)]) == 2


def test_model_card_lists_the_shipped_checkpoint_sha256() -> None:
    """Every checkpoint in models/ is named in the model card with its SHA-256, and every one named exists."""
    card = (ROOT / "models" / "README.md").read_text()
    listed = dict(re.findall(r"`models/([\w.-]+\.pt)`[^\n]*?SHA-256 `([0-9a-f]{64})`", card))
    present = sorted(p.name for p in (ROOT / "models").glob("*.pt"))
    if not present and not listed:
        pytest.skip("no checkpoint in models/ yet: the lead adds the 0.3.0 bundled model's checkpoint")
    assert sorted(listed) == present, "models/README.md must list each models/*.pt (and only those)"
    for name, sha in listed.items():
        assert hashlib.sha256((ROOT / "models" / name).read_bytes()).hexdigest() == sha, name
