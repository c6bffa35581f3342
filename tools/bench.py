"""Benchmark: each stage of ``l3edge predict`` against the seed-equivalent baseline, in one run.

For phantom DICOM series of the requested slice counts, prints one table with
- read + MIP, preprocess, CNN, refine (when the model has a refiner), post-process (median of ``--repeat``
  in-process runs of the model),
- the whole ``l3edge predict`` process (fresh interpreter, median wall time of ``--repeat`` runs, peak RSS),
- just reading the series' pixels with pydicom (the floor any DICOM tool pays),
- the seed-equivalent CNN baseline: unpruned VGG16, FP32, PyTorch eager, stride 1, the same windows,
and the ratios between them (the CNN speed-up of the main model alone, and with the refiner's whole stage
added). The CNN stage runs the MIP and its left-right mirror (one batch); the last columns time the same
locator with ``mirror=False``, one pass: the seed's work.

A second table, the reading table, writes the same phantom as uncompressed, JPEG 2000, JPEG-LS and RLE
series and times the whole ``l3edge predict`` process (fresh interpreter: start-up, imports, model compile,
header pass, decode, MIP, model) with one thread and with all threads, against a plain serial pydicom read of
the same files (``dcmread(f).pixel_array`` for every file, the page cache warm for all), both in this process
(no start-up to pay) and as a fresh process (``python -c "import pydicom; ..."``: what a script pays), as
ratios of medians over ``--repeat`` interleaved rounds. The process also reports its own reading time
(``read_mip``) and its peak RSS. Child processes share one compiled-model cache under ``--workdir`` (warm
before any timing), unless ``L3EDGE_CACHE_DIR`` says otherwise.

A third table, the start-up table (``tools/bench_startup.py``), times the fixed cost of a one-scan process:
interpreter, imports, model load without / with an empty / with a warm cache, and the whole process on a
4-slice series, against ``python -c "import numpy, pydicom"`` in the same run.
Timings on a shared machine are noisy: compare ratios from the same run.

    python -m tools.bench --slices 500 1200 [--model M.xml] [--parent vgg16.pt] [--threads 2]
    python -m tools.bench --tables reading --reading-slices 500 [--syntaxes explicit jpeg2000 jpegls rle]
    python -m tools.bench --tables startup [--repeat 5]

Many scans (tools/bench_cohort.py; these replace the stage table):

    python -m tools.bench --cohort 40 [--workers 2] [--matrix 512] [--repeat 3]   # 1 worker / pool / Dask
    python -m tools.bench --shared-locator 1 2 4 8 [--scans 24] [--in-memory]   # threads on one locator
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SYNTAXES = ("explicit", "jpeg2000", "jpegls", "rle")
SYNTAX_NAMES = {"explicit": "uncompressed", "jpeg2000": "JPEG 2000 lossless", "jpegls": "JPEG-LS lossless",
                "rle": "RLE lossless"}  # fmt: skip


def _phantom_series(root: Path, n_slices: int, seed: int, syntax: str = "explicit") -> Path:
    """A chest-abdomen-pelvis phantom of exactly ``n_slices`` 512x512 slices in ``syntax`` (reused)."""
    from l3edge.phantom import sample_config, write_phantom
    from l3edge.phantom.anatomy import build_anatomy

    out = (
        root / f"phantom_{n_slices}_{seed}"
        if syntax == "explicit"
        else root / f"phantom_{n_slices}_{seed}_{syntax}"
    )
    if (out / "truth.json").exists():
        return out
    cfg = sample_config(seed, "cap")
    lo, hi = cfg.scan_z_range if cfg.scan_z_range else build_anatomy(cfg).truth().scan_z_range
    spacing = (hi - lo) / (n_slices - 1)
    cfg = cfg.with_overrides(
        scan_z_range=(lo, lo + spacing * (n_slices - 1)),
        slice_spacing_mm=spacing,
        slice_thickness_mm=max(spacing, 0.625),
    )
    write_phantom(out, seed, config=cfg, transfer_syntax=syntax)
    return out


def _warm(series: Path) -> None:
    """Read every file once so that both contenders find them in the page cache."""
    for f in series.iterdir():
        f.read_bytes()


def reading_rows(args: argparse.Namespace) -> list[dict]:
    """The reading table: per slice count and transfer syntax, the process with 1 and all threads against a
    plain serial pydicom read of the same files."""
    from l3edge.locator import L3Locator

    for threads in sorted({1, args.threads}):
        L3Locator.load(args.model, threads=threads)  # compiled as the children will be: their cache is warm
    rows = []
    for n in args.reading_slices:
        for syntax in args.syntaxes:
            print(f"[bench] reading: {n} slices, {SYNTAX_NAMES[syntax]} ...", file=sys.stderr)
            series = _phantom_series(args.workdir, n, args.seed, syntax)
            _warm(series)
            # Interleaved (baseline, 1 thread, all threads, baseline, ...) so that a load that changes
            # during the run weighs on every contender alike; medians of each.
            settings = sorted({1, args.threads})
            base: list[float] = []
            base_process: list[float] = []
            by_threads: dict[int, list[tuple[float, float, dict]]] = {t: [] for t in settings}
            for _ in range(args.repeat):
                base.append(_pydicom_read_s(series))
                base_process.append(_pydicom_process_s(series))
                for t in settings:
                    by_threads[t].append(_process(series, args.model, t))
            floor_s = statistics.median(base)
            floor_process_s = statistics.median(base_process)
            for threads in settings:
                runs = by_threads[threads]
                wall = statistics.median(r[0] for r in runs)
                read_s = statistics.median(r[2]["timings_ms"]["read_mip"] for r in runs) / 1000
                rows.append(
                    {
                        "syntax": syntax,
                        "slices": n,
                        "threads": threads,
                        "pydicom_read_s": floor_s,
                        "pydicom_process_s": floor_process_s,
                        "process_s": wall,
                        "process_over_pydicom": wall / floor_s,
                        "process_over_pydicom_process": wall / floor_process_s,
                        "read_mip_s": read_s,
                        "peak_rss_mb": max(r[1] for r in runs),
                        "found": runs[0][2].get("found"),
                    }
                )
    return rows


def print_reading(rows: list[dict]) -> None:
    print(
        "\n| series | slices | threads | plain pydicom read s: in process / as a process "
        "| `l3edge predict` process s | process / pydicom process | process / pydicom in process "
        "| of which reading s | peak RSS MB | L3 found |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {SYNTAX_NAMES[r['syntax']]} | {r['slices']} | {r['threads']} "
            f"| {r['pydicom_read_s']:.2f} / {r['pydicom_process_s']:.2f} | {r['process_s']:.2f} "
            f"| {r['process_over_pydicom_process']:.2f}x | {r['process_over_pydicom']:.2f}x "
            f"| {r['read_mip_s']:.2f} | {r['peak_rss_mb']:.0f} | {r['found']} |"
        )


def _pydicom_read_s(series: Path) -> float:
    """Seconds to read every slice's pixels with plain pydicom (the floor of any DICOM reader)."""
    import pydicom

    files = sorted(p for p in series.iterdir() if p.name != "truth.json")
    t = time.perf_counter()
    for f in files:
        pydicom.dcmread(f).pixel_array  # noqa: B018
    return time.perf_counter() - t


PYDICOM_READ = (
    "import sys\nfrom pathlib import Path\nimport pydicom\n"
    "for f in sorted(p for p in Path(sys.argv[1]).iterdir() if p.name != 'truth.json'):\n"
    "    pydicom.dcmread(f).pixel_array\n"
)


def _pydicom_process_s(series: Path) -> float:
    """Wall seconds of the same plain serial pydicom read as a fresh process (start-up, imports included)."""
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", PYDICOM_READ, str(series)], check=True, capture_output=True)
    return time.perf_counter() - t


def _process(series: Path, model: str | None, threads: int) -> tuple[float, float, dict]:
    """Run ``l3edge predict --json`` in a fresh interpreter: (wall s, peak RSS MB, result)."""
    # The child reports its own peak RSS from VmHWM: getrusage's ru_maxrss survives fork + exec, so it would
    # also count this benchmark process's pages. In an atexit handler: l3edge.cli.main ends the process with
    # os._exit once its atexit handlers ran (no `finally` after it runs), as the console script does.
    code = (
        "import atexit, sys\nfrom l3edge.cli import main\ndef rss():\n"
        "    hwm = [ln for ln in open('/proc/self/status') if ln.startswith('VmHWM')]\n"
        "    sys.stderr.write('\\n[rss_kib] %s\\n' % (hwm[0].split()[1] if hwm else 'nan'))\n"
        "atexit.register(rss)\nmain()\n"
    )
    cmd = [sys.executable, "-c", code, "predict", str(series), "--json", "--threads", str(threads)]
    if model:
        cmd += ["--model", model]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t
    stdout, stderr = proc.stdout, proc.stderr
    rss = float("nan")
    if "[rss_kib]" in stderr:
        rss = float(stderr.rsplit("[rss_kib]", 1)[-1].split()[0]) / 1024
    if proc.returncode != 0:
        raise SystemExit(f"l3edge predict failed ({proc.returncode}): {stderr.strip()}")
    return wall, rss, json.loads(stdout.strip().splitlines()[-1])


def _baseline_cnn_s(channels: np.ndarray, height: int, parent: str | None, threads: int) -> tuple[float, int]:
    """Seed-equivalent CNN stage: unpruned VGG16 FP32 in PyTorch eager mode, every window at stride 1."""
    import torch

    from l3edge.sliding import predict_windows
    from tools.checkpoint import load_checkpoint
    from tools.models import build_model

    torch.set_num_threads(threads)
    if parent:
        model, _ = load_checkpoint(parent)
    else:
        model = build_model("vgg16", height, channels.shape[2]).eval()

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(batch)).numpy()

    t = time.perf_counter()
    tops, _ = predict_windows(run, channels, height, 1, batch_size=16)
    return time.perf_counter() - t, int(tops.size)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slices", type=int, nargs="+", default=[500, 1200], help="series lengths to benchmark")
    ap.add_argument("--model", help="IR to benchmark (default: L3EDGE_MODEL, then the bundled model)")
    ap.add_argument(
        "--parent", help="unpruned FP32 VGG16 checkpoint for the baseline (default: random weights)"
    )
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument(
        "--repeat", type=int, default=3, help="repetitions per stage and of the whole process (median)"
    )
    ap.add_argument("--workdir", type=Path, help="where phantom series are written (default: a temp dir)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also write the rows as JSON")
    ap.add_argument("--cohort", type=int, help="N phantom series: 1 worker, all workers, Dask LocalCluster")
    ap.add_argument("--workers", type=int, help="workers of the pool and the Dask cluster (default: cores)")
    ap.add_argument("--matrix", type=int, default=512, help="slice matrix of the cohort's phantoms")
    ap.add_argument(
        "--shared-locator", type=int, nargs="+", help="thread counts: one shared locator vs one per thread"
    )
    ap.add_argument("--scans", type=int, default=24, help="scans per --shared-locator run")
    ap.add_argument(
        "--in-memory", action="store_true", help="--shared-locator on in-memory MIPs (the model stages alone)"
    )
    ap.add_argument(
        "--tables",
        nargs="+",
        choices=("stages", "reading", "startup"),
        default=["stages", "reading", "startup"],
        help="what to run",
    )
    ap.add_argument("--reading-slices", type=int, nargs="+", default=[500], help="series lengths (reading)")
    ap.add_argument("--syntaxes", nargs="+", choices=SYNTAXES, default=list(SYNTAXES), help="reading table")
    args = ap.parse_args(argv)
    if args.cohort or args.shared_locator:
        return _many_scans(args)

    import l3edge
    from l3edge.locator import L3Locator
    from l3edge.preprocess import normalize, to_model_space
    from l3edge.runtime import CACHE_ENV_VAR, cache_root
    from l3edge.scan import read_projection
    from tools.bench_startup import print_startup, startup_rows

    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="l3edge-bench-")
        args.workdir = Path(tmp.name)
    args.workdir.mkdir(parents=True, exist_ok=True)
    # Every child process shares one compiled-model cache (a user's second run onwards); warm before timing.
    os.environ.setdefault(CACHE_ENV_VAR, str(args.workdir / "compiled_model_cache"))
    # pip compiles an installed package's bytecode; a checkout run with PYTHONDONTWRITEBYTECODE=1 compiles
    # every l3edge module from source at every start (about 0.1 s), which no installed l3edge pays.
    compileall.compile_dir(Path(l3edge.__file__).parent, quiet=1)
    locator = L3Locator.load(args.model, threads=args.threads)
    one_pass = L3Locator.load(args.model, threads=args.threads, mirror=False)  # the seed's work: one pass
    meta = locator.metadata
    rows = []
    for n in args.slices if "stages" in args.tables else []:
        print(f"[bench] writing/reading a {n}-slice phantom series ...", file=sys.stderr)
        series = _phantom_series(args.workdir, n, args.seed)
        _pydicom_read_s(series)  # warm the page cache for every contender
        floor_s = min(_pydicom_read_s(series) for _ in range(2))
        stage_runs = [locator.predict(series).timings_ms for _ in range(args.repeat)]
        stages = {
            k: statistics.median(r.get(k, 0.0) for r in stage_runs)
            for k in ("read_mip", "preprocess", "cnn", "refine", "postprocess")
        }
        one_cnn = statistics.median(one_pass.predict(series).timings_ms["cnn"] for _ in range(args.repeat))
        runs = [_process(series, args.model, args.threads) for _ in range(args.repeat)]
        wall = statistics.median(r[0] for r in runs)
        rss, result = max(r[1] for r in runs), runs[0][2]
        proj = read_projection(series)
        image, _ = to_model_space(proj.mip_hu, proj.z_mm, proj.col_spacing_mm, meta.space)
        channels = normalize(image, meta.space)
        print(
            f"[bench] seed baseline: VGG16 FP32 torch eager, stride 1 on {channels.shape} ...",
            file=sys.stderr,
        )
        base_s, n_windows = _baseline_cnn_s(channels, meta.space.window_height_px, args.parent, args.threads)
        rows.append(
            {
                "slices": n,
                "read_mip_ms": stages["read_mip"],
                "preprocess_ms": stages["preprocess"],
                "cnn_ms": stages["cnn"],
                "cnn_one_pass_ms": one_cnn,
                "refine_ms": stages["refine"],
                "postprocess_ms": stages["postprocess"],
                "process_s": wall,
                "peak_rss_mb": rss,
                "pydicom_read_s": floor_s,
                "baseline_cnn_s": base_s,
                "baseline_windows": n_windows,
                "cnn_speedup": base_s * 1000 / max(stages["cnn"], 1e-6),
                "cnn_one_pass_speedup": base_s * 1000 / max(one_cnn, 1e-6),
                "cnn_refine_speedup": base_s * 1000 / max(stages["cnn"] + stages["refine"], 1e-6),
                "process_over_pydicom": wall / floor_s,
                "found": result.get("found"),
            }
        )

    reading = reading_rows(args) if "reading" in args.tables else []
    cache = cache_root()
    startup = startup_rows(args, cache) if "startup" in args.tables and cache is not None else []
    print(
        f"\nmodel: {meta.name} {meta.version} ({meta.precision}), stride {locator.stride} px, "
        f"threads {args.threads}, inference precision {locator.model.inference_precision}"
    )
    if rows:
        print_stages(rows)
    if reading:
        print_reading(reading)
    if startup:
        print_startup(startup)
    if args.json:
        doc = {"stages": rows, "reading": reading, "startup": startup}
        args.json.write_text(json.dumps(doc, indent=1))
    if tmp is not None:
        tmp.cleanup()
    return 0


def print_stages(rows: list[dict]) -> None:
    print(
        "\n| slices | read+MIP ms | preprocess ms | CNN ms (MIP + mirror) | refine ms | post ms "
        "| `l3edge predict` s | peak RSS MB | pydicom read s | process / pydicom | seed CNN s (windows) "
        "| CNN speed-up | CNN + refine speed-up | CNN one pass ms | one pass speed-up |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['slices']} | {r['read_mip_ms']:.0f} | {r['preprocess_ms']:.1f} | {r['cnn_ms']:.1f} "
            f"| {r['refine_ms']:.1f} | {r['postprocess_ms']:.2f} | {r['process_s']:.2f} "
            f"| {r['peak_rss_mb']:.0f} "
            f"| {r['pydicom_read_s']:.2f} | {r['process_over_pydicom']:.2f}x "
            f"| {r['baseline_cnn_s']:.1f} ({r['baseline_windows']}) | {r['cnn_speedup']:.0f}x "
            f"| {r['cnn_refine_speedup']:.0f}x | {r['cnn_one_pass_ms']:.1f} "
            f"| {r['cnn_one_pass_speedup']:.0f}x |"
        )


def _many_scans(args: argparse.Namespace) -> int:
    from tools.bench_cohort import cohort_table, shared_locator_table

    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="l3edge-bench-")
        args.workdir = Path(tmp.name)
    args.workdir.mkdir(parents=True, exist_ok=True)
    rows: dict[str, list[dict]] = {}
    if args.cohort:
        rows["cohort"] = cohort_table(args)
    if args.shared_locator:
        rows["shared_locator"] = shared_locator_table(args)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
