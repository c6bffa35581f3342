"""The review page at cohort size, in a real headless Chromium (chromedriver + selenium): page size, time to
the first card and to the next card, with and without embedded thumbnails.

    python -m tools.bench_review RESULTS.jsonl --scans 1000 --no-embed --scans 100 --embed

RESULTS holds a few scans predicted with ``--qa`` (their pictures and geometry); the cohort repeats them under
distinct paths. Prints a table: page MB, time to the first card (navigation start to the script's handlers
bound, ``data-ui-ms``), to the next card (one ``j`` key: handler plus two animation frames, in the page;
median of 20) and to an accept (``a``: stored, counted, next undecided card shown; median of 20).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

from l3edge.report import write_report

KEY_MS = """
const [key, done] = arguments;
const t = performance.now();
document.dispatchEvent(new KeyboardEvent('keydown', {key: key, bubbles: true}));
requestAnimationFrame(() => requestAnimationFrame(() => done(performance.now() - t)));
"""


def cohort(results: Path, n: int, out: Path) -> Path:
    rows = [json.loads(ln) for ln in results.read_text().splitlines() if ln.strip()]
    lines = []
    for i in range(n):
        d = dict(rows[i % len(rows)])
        d["path"] = f"{d['path']}-copy{i:05d}"
        lines.append(json.dumps(d) + "\n")
    out.write_text("".join(lines))
    return out


def browser(profile: Path) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1000"):
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(options=opts, service=Service(shutil.which("chromedriver") or "chromedriver"))
    driver.set_script_timeout(60)
    return driver


def measure(page: Path, work: Path) -> dict[str, float]:
    import time

    d = browser(work / f"profile-{page.stem}")
    try:
        d.get(page.resolve().as_uri())
        t0 = time.monotonic()
        while d.execute_script("return document.documentElement.dataset.ui") != "1":
            if time.monotonic() - t0 > 120:
                raise TimeoutError("the page's script did not run")
            time.sleep(0.05)
        first = float(d.execute_script("return document.documentElement.dataset.uiMs"))
        nxt = [d.execute_async_script(KEY_MS, "j") for _ in range(20)]
        acc = [d.execute_async_script(KEY_MS, "a") for _ in range(20)]  # a not-found scan: a note only
    finally:
        d.quit()
    return {"first_ms": first, "next_ms": statistics.median(nxt), "accept_ms": statistics.median(acc)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.bench_review", description=__doc__)
    ap.add_argument("results", type=Path, help="results of l3edge predict --qa (a few scans)")
    ap.add_argument("--scans", type=int, action="append", help="cohort sizes (one page each)")
    ap.add_argument("--embed", dest="embed", action="append_const", const=True)
    ap.add_argument("--no-embed", dest="embed", action="append_const", const=False)
    a = ap.parse_args(argv)
    sizes = a.scans or [1000, 100]
    embeds = a.embed or [False, True]
    if len(embeds) != len(sizes):
        ap.error("give --embed or --no-embed after each --scans")
    print("| scans | thumbnails | page MB | thumbnail files MB | first card ms | next card ms | accept ms |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for n, embed in zip(sizes, embeds, strict=True):
            res = cohort(a.results.resolve(), n, work / f"cohort{n}.jsonl")
            page = write_report(res, work / f"page{n}-{int(embed)}.html", embed=embed).path
            thumbs = page.with_name(page.stem + "_thumbs")
            files = sum(f.stat().st_size for f in thumbs.glob("*.jpg")) if thumbs.is_dir() else 0
            m = measure(page, work)
            print(
                f"| {n} | {'embedded' if embed else 'beside (--no-embed)'} | {page.stat().st_size / 1e6:.2f} "
                "| "
                f"{files / 1e6:.2f} | {m['first_ms']:.0f} | {m['next_ms']:.1f} | {m['accept_ms']:.1f} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
