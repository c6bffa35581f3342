"""The review page as a reviewer uses it: a real headless Chromium driven through chromedriver (selenium)
clicks and types; then the downloaded corrections.csv goes through `l3edge export` and `tools.build_cache`.

Round trip on phantoms: the bundled model's results, with a deliberately wrong answer on one scan; the test
accepts a right one, corrects the wrong one by a click at the phantom's true L3 row (then a slice at a time;
the card's axial view follows the line, from the thumbnails of ``--qa-axial``),
rejects the chest scan (no L3), reloads, downloads, exports (byte-identical slices) and builds a cache whose
labels equal the phantom truth within one slice.
"""

from __future__ import annotations

import csv
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from l3edge import batch
from l3edge.cli import app
from l3edge.report import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
WAIT_S = 60.0


def _skip_reason() -> str | None:
    if CHROMIUM is None or CHROMEDRIVER is None:
        return "Chromium or chromedriver not installed (Debian: apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium not installed (pip install -e '.[test]')"
    return None


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))


@pytest.fixture
def browser(tmp_path: Path) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,1000",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        opts.add_argument(flag)
    opts.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    # chromedriver listens on a loopback port of its own choosing; nothing else is reached.
    service = Service(str(CHROMEDRIVER), service_args=["--allowed-ips=127.0.0.1"])
    driver = webdriver.Chrome(options=opts, service=service)
    driver.set_page_load_timeout(WAIT_S)
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.downloads = downloads
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(pred: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def dataset(driver: Any) -> dict[str, str]:
    return dict(driver.execute_script("return Object.assign({}, document.documentElement.dataset)"))


def open_page(driver: Any, page: Path) -> None:
    driver.get(page.resolve().as_uri())
    wait_for(lambda: dataset(driver).get("ready") == "1", "the page's script")


def click_clear(driver: Any, element: Any) -> None:
    """Click an element after scrolling it to the middle of the view, clear of the page's sticky header
    (the cards' order, and so where a card sits, follows the model's answers)."""
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
    element.click()


def card_of(driver: Any, name: str) -> Any:
    from selenium.webdriver.common.by import By

    for c in driver.find_elements(By.CSS_SELECTOR, "article.card"):
        if c.find_element(By.TAG_NAME, "h2").text.split()[0] == name:
            return c
    raise AssertionError(f"no card {name}")


def press(driver: Any, *keys: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    chain = ActionChains(driver)
    for k in keys:
        chain.send_keys(k)
    chain.perform()


def click_row(driver: Any, card: Any, geometry: dict[str, Any], row: int) -> None:
    """Click the card's picture at the height of MIP row ``row`` (the geometry's mapping of z to pixels)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    img = card.find_element(By.CSS_SELECTOR, ".pic img")
    w, h = img.size["width"], img.size["height"]
    s = h / geometry["height"]
    mip = geometry["mip"]
    y = (mip["y"] + (geometry["z_top_mm"] - geometry["z_mm"][row]) / geometry["height_mm"] * mip["h"]) * s
    x = mip["w"] / 2 * s
    chain = ActionChains(driver).move_to_element_with_offset(img, round(x - w / 2), round(y - h / 2))
    chain.click().perform()


def geometry_of(result: dict[str, Any]) -> dict[str, Any]:
    return json.loads(Path(result["qa_path"]).with_suffix(".json").read_text())


@pytest.fixture(scope="module")
def reviewed_cohort(phantom_cohort: list[Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The bundled model's results on the phantoms, ph2's L3 moved 6 slices off (deliberately wrong)."""
    work = tmp_path_factory.mktemp("review")
    out = work / "results.jsonl"
    paths = [str(p) for p in phantom_cohort]
    list(batch.run(paths, workers=1, options={"qa_dir": str(work / "qa"), "qa_axial": 3}, out=out))
    rows = [json.loads(ln) for ln in out.read_text().splitlines()]
    by = {Path(d["path"]).name: d for d in rows}
    assert all(by[n]["found"] for n in ("ph1", "ph2", "ph4")), [(n, d["found"]) for n, d in by.items()]
    g = geometry_of(by["ph2"])
    right = min(range(len(g["z_mm"])), key=lambda r: abs(g["z_mm"][r] - by["ph2"]["z_mm"]))
    wrong = right + 6
    bad = {
        "z_mm": g["z_mm"][wrong],
        "slice_z_mm": g["z_mm"][wrong],
        "slice_index": g["slice_index"][wrong],
        "sop_instance_uid": g["sop_instance_uid"][wrong],
    }
    by["ph2"].update(bad)
    by["ph2"]["levels"]["L3"].update({k: bad[k] for k in ("z_mm", "slice_index", "sop_instance_uid")})
    out.write_text("".join(json.dumps(d) + "\n" for d in rows))
    truth = {n: json.loads((p / "truth.json").read_text()) for n, p in ((p.name, p) for p in phantom_cohort)}
    return {"work": work, "results": out, "by": by, "truth": truth, "paths": phantom_cohort}


def nearest(values: list[float], z: float) -> int:
    return min(range(len(values)), key=lambda r: abs(values[r] - z))


def axial_view(driver: Any, card: Any) -> dict[str, Any]:
    """What the card's axial view shows: the tile index, the strip's pixel size, its offset and the box's."""
    return dict(
        driver.execute_script(
            "var c = arguments[0], b = c.querySelector('.pic .ax'), im = b && b.firstChild;"
            "return b ? {j: c.dataset.ax, hidden: b.hidden, nw: im.naturalWidth,"
            " left: parseFloat(im.style.left), w: parseFloat(b.style.width), tag: b.lastChild.textContent}"
            " : {};",
            card,
        )
    )


def check_axial(driver: Any, card: Any, g: dict[str, Any], row: int, not_tile: int) -> None:
    """The card shows the thumbnail nearest MIP row ``row`` (so not tile ``not_tile``), loaded, in view."""
    ax = g["axial"]
    want = nearest(ax["z_mm"], g["z_mm"][row])
    assert want != not_tile
    wait_for(lambda: axial_view(driver, card).get("nw"), "the axial thumbnails")
    v = axial_view(driver, card)
    assert v["j"] == str(want) and not v["hidden"], (v, want)
    assert v["nw"] == ax["tile_w"] * len(ax["z_mm"])
    assert v["left"] == pytest.approx(-want * v["w"], abs=0.5) and v["w"] > 20
    assert v["tag"] == f"z {ax['z_mm'][want]:.1f}"


def test_review_round_trip(browser: Any, reviewed_cohort: dict[str, Any], tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    c = reviewed_cohort
    by, truth = c["by"], c["truth"]
    page = write_report(c["results"], tmp_path / "report.html").path
    open_page(browser, page)
    ds = dataset(browser)
    assert ds["decided"] == "0" and ds["left"] == "4" and ds["level"] == "L3"

    # Accept ph1: pick its card (a click beside the picture), key a. The next undecided card comes up.
    click_clear(browser, card_of(browser, "ph1").find_element(By.CLASS_NAME, "path"))
    press(browser, "a")
    assert "L3 accepted" in card_of(browser, "ph1").find_element(By.CLASS_NAME, "dec").text
    assert dataset(browser)["cur"] != str(card_of(browser, "ph1").get_attribute("data-i"))

    # Correct ph2 by a click at the phantom's true L3 row, then arrow keys to the exact slice.
    g2 = geometry_of(by["ph2"])
    target = nearest(g2["z_mm"], truth["ph2"]["l3_z_mm"])
    card2 = card_of(browser, "ph2")
    click_row(browser, card2, g2, target)
    ds = dataset(browser)
    assert ds["cur"] == card2.get_attribute("data-i")
    clicked = int(ds["row"])
    assert abs(clicked - target) <= 1, (clicked, target)  # a thumbnail pixel is about a slice here
    for _ in range(abs(clicked - target)):
        press(browser, "\ue013" if clicked > target else "\ue015")  # arrow up / arrow down
    assert int(dataset(browser)["row"]) == target
    assert "L3 corrected" in card2.find_element(By.CLASS_NAME, "dec").text
    # The axial view shows the thumbnail at the corrected row, not the one at the model's (wrong) pick.
    model_tile = nearest(g2["axial"]["z_mm"], by["ph2"]["z_mm"])
    check_axial(browser, card2, g2, target, model_tile)
    press(browser, "\ue015")  # one slice down: the view follows
    check_axial(browser, card2, g2, target + 1, nearest(g2["axial"]["z_mm"], g2["z_mm"][target]))
    press(browser, "\ue013")
    assert int(dataset(browser)["row"]) == target

    # Reject ph3 (a chest scan: no L3).
    click_clear(browser, card_of(browser, "ph3").find_element(By.CLASS_NAME, "path"))
    press(browser, "r")
    ds = dataset(browser)
    assert ds["decided"] == "3" and ds["left"] == "1"

    # The decision filter, then reload: the decisions are kept.
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element(By.ID, "decision")).select_by_value("correct")
    assert dataset(browser)["shown"] == "1"
    browser.refresh()
    wait_for(lambda: dataset(browser).get("ready") == "1", "the reloaded page")
    ds = dataset(browser)
    assert ds["decided"] == "3" and ds["left"] == "1"
    assert "L3 rejected" in card_of(browser, "ph3").find_element(By.CLASS_NAME, "dec").text

    # Download corrections.csv (key d) and check it against the pictures' geometry.
    browser.find_element(By.TAG_NAME, "body").click()
    press(browser, "d")
    dl = browser.downloads / "corrections.csv"
    wait_for(lambda: dl.is_file() and dl.stat().st_size > 0, "the download")
    with open(dl, newline="") as f:
        got = {Path(r["path"]).name: r for r in csv.DictReader(f)}
    assert sorted(got) == ["ph1", "ph2", "ph3"]
    assert got["ph1"]["decision"] == "accept"
    assert float(got["ph1"]["z_mm"]) == pytest.approx(by["ph1"]["z_mm"])
    assert int(got["ph1"]["slice_index"]) == by["ph1"]["slice_index"]
    r2 = got["ph2"]
    assert r2["decision"] == "correct" and r2["level"] == "L3"
    assert float(r2["z_mm"]) == pytest.approx(g2["z_mm"][target], abs=1e-3)
    assert int(r2["slice_index"]) == g2["slice_index"][target]
    assert r2["sop_instance_uid"] == g2["sop_instance_uid"][target]
    assert r2["series_instance_uid"] == by["ph2"]["series_instance_uid"] and r2["time"]
    assert got["ph3"]["decision"] == "reject" and got["ph3"]["z_mm"] == ""

    # Import restores the decisions in a browser that forgot them.
    browser.execute_script("localStorage.clear()")
    browser.refresh()
    wait_for(lambda: dataset(browser).get("ready") == "1", "the page after clearing")
    assert dataset(browser)["decided"] == "0"
    browser.find_element(By.ID, "import").send_keys(str(dl))
    wait_for(lambda: dataset(browser).get("decided") == "3", "the import")
    assert "imported 3 decisions" in dataset(browser)["msg"]

    # Export: the corrected and accepted slices, byte for byte the original files.
    out = tmp_path / "export"
    r = CliRunner().invoke(app, ["export", str(c["results"]), "--corrections", str(dl), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "exported 2 slices" in r.stdout and "1 rejected and 1 undecided" in r.stdout
    from l3edge.scan import read_projection

    for name, z in (("ph1", by["ph1"]["z_mm"]), ("ph2", truth["ph2"]["l3_z_mm"])):
        proj = read_projection(next(p for p in c["paths"] if p.name == name))
        assert proj.series is not None
        row = nearest(list(proj.z_mm), float(got[name]["z_mm"]))
        src = proj.series.slice_files[row]
        assert (out / name / src.name).read_bytes() == src.read_bytes()
        assert (out / name / (src.stem + ".png")).is_file()
        assert abs(proj.z_mm[row] - z) <= 5.0 / 2 + 1e-6 or name == "ph1"
    assert not (out / "ph3").exists()
    assert (out / "export.csv").read_text().count("\n") == 3

    # The training cache from the same file: labels equal the phantom truth within one slice.
    from tools.build_cache import main as build_cache
    from tools.data import read_index

    cache = tmp_path / "cache"
    argv = ["--results", str(c["results"]), "--corrections", str(dl), "--out", str(cache), "--quiet"]
    assert build_cache(argv) == 0
    metas = {Path(m["path"]).name: m for m in read_index(cache)["scans"]}
    assert sorted(metas) == ["ph1", "ph2", "ph3"]
    spacing = truth["ph2"]["slice_spacing_mm"]
    for name in ("ph1", "ph2"):
        assert metas[name]["in_view"] and abs(metas[name]["label_z_mm"] - truth[name]["l3_z_mm"]) <= spacing
    assert not metas["ph3"]["in_view"] and not truth["ph3"]["l3_in_view"]
