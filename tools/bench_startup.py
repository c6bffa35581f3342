"""Start-up benchmark (``tools/bench.py --tables startup``): what a one-scan ``l3edge predict`` pays around
its scan's own work.

Every row is a fresh interpreter timed from outside (wall seconds, median of ``--repeat`` rounds, at least 5;
the rows run interleaved within each round so that a load that changes during the run weighs on all alike) and
shown as a ratio to ``python -c "import numpy, pydicom"`` from the same rounds: the floor of any Python DICOM
tool. The model-load rows time ``L3Locator.load`` inside their process (read, check and compile the main model
and its refiner): with no cache, with an empty cache (compile, then write the blobs), and with a warm cache.
The last rows are the whole ``l3edge predict SERIES --json`` process on a 4-slice 64x64 phantom series, with a
warm compiled-model cache and with ``--no-cache``.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

LOAD = (
    "import sys, time\nfrom l3edge.locator import L3Locator\nt = time.perf_counter()\n"
    "L3Locator.load(sys.argv[1] or None, cache_dir=False if sys.argv[2] == 'off' else sys.argv[2])\n"
    "print(time.perf_counter() - t)\n"
)


def startup_series(workdir: Path, seed: int) -> Path:
    """A 4-slice 64x64 abdomen phantom around L3 (written once under ``workdir``)."""
    from l3edge.phantom import sample_config, write_phantom

    out = workdir / "startup_series"
    if not (out / "truth.json").exists():
        cfg = sample_config(seed, "abdomen", matrix=64, pixel_spacing_mm=6.4, slice_spacing_mm=5.0)
        z0 = cfg.l3_z_mm
        write_phantom(out, seed, config=cfg.with_overrides(scan_z_range=(z0 - 7.5, z0 + 7.5)))
    return out


def _cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _wall(cmd: list[str]) -> tuple[float, float, str]:
    """(wall s, CPU s, stdout) of one process. CPU seconds (user + system, all its threads) suffer less from
    other users' load than wall seconds do."""
    t, c = time.perf_counter(), _cpu_children()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall, cpu = time.perf_counter() - t, _cpu_children() - c
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed ({proc.returncode}): {proc.stderr.strip()[-400:]}")
    return wall, cpu, proc.stdout


def startup_rows(args: argparse.Namespace, cache: Path) -> list[dict]:
    """The start-up table's rows; ``cache`` is the compiled-model cache the warm rows use (warmed here)."""
    series = startup_series(args.workdir, args.seed)
    for f in series.iterdir():
        f.read_bytes()  # the page cache warm, as for the other contenders
    py, model = sys.executable, args.model or ""
    predict = [py, "-m", "l3edge.cli", "predict", str(series), "--json", "--threads", str(args.threads)]
    if args.model:
        predict += ["--model", args.model]
    _wall(predict)  # fills the cache (and the OS's caches of every file the process opens)
    wall_rows = {
        "interpreter alone (`python -c pass`)": [py, "-c", "pass"],
        "baseline: `import numpy, pydicom`": [py, "-c", "import numpy, pydicom"],
        "`import l3edge.cli`": [py, "-c", "import l3edge.cli"],
        "`import openvino`": [py, "-c", "import openvino"],
        "first scan: `l3edge predict` (4 slices), warm cache": predict,
        "first scan: `l3edge predict` (4 slices), `--no-cache`": [*predict, "--no-cache"],
    }
    inner_rows = {
        "model load, no cache": "off",
        "model load, empty cache (compile + write)": "",  # a new, empty folder each round
        "model load, warm cache": str(cache),
    }
    walls: dict[str, list[float]] = {k: [] for k in wall_rows}
    cpus: dict[str, list[float]] = {k: [] for k in wall_rows}
    inner: dict[str, list[float]] = {k: [] for k in inner_rows}
    with tempfile.TemporaryDirectory(prefix="l3edge-cache-") as empty_root:
        for i in range(max(5, args.repeat)):
            print(f"[bench] start-up: round {i + 1}", file=sys.stderr)
            for name, cmd in wall_rows.items():
                wall, cpu, _ = _wall(cmd)
                walls[name].append(wall)
                cpus[name].append(cpu)
            for name, where in inner_rows.items():
                where = where or str(Path(empty_root) / f"round{i}")
                inner[name].append(float(_wall([py, "-c", LOAD, model, where])[2].strip().splitlines()[-1]))
    base_key = "baseline: `import numpy, pydicom`"
    base, base_cpu = statistics.median(walls[base_key]), statistics.median(cpus[base_key])
    rows: list[dict[str, Any]] = []
    for k, v in walls.items():
        wall, cpu = statistics.median(v), statistics.median(cpus[k])
        rows.append({"what": k, "s": wall, "over_baseline": wall / base, "cpu_s": cpu, "process": True,
                     "cpu_over_baseline": cpu / base_cpu})  # fmt: skip
    for k, v in inner.items():
        wall = statistics.median(v)
        rows.append({"what": k, "s": wall, "over_baseline": wall / base, "process": False})
    return rows


def print_startup(rows: list[dict]) -> None:
    print("\n| start-up | wall s | / baseline | CPU s | / baseline |")
    print("|---|---|---|---|---|")
    for r in rows:
        if r["process"]:
            cpu = f"{r['cpu_s']:.3f} | {r['cpu_over_baseline']:.2f}x"
            print(f"| {r['what']} | {r['s']:.3f} | {r['over_baseline']:.2f}x | {cpu} |")
        else:
            print(f"| {r['what']} (inside its process) | {r['s']:.3f} | {r['over_baseline']:.2f}x | | |")
