"""Benchmarks of many scans (called by ``tools/bench.py --cohort N`` and ``--shared-locator``).

Cohort: N phantom DICOM series through ``l3edge.batch.run`` with 1 worker (in process), with all workers
(the local process pool), and on a Dask LocalCluster with the same number of worker processes (one thread
each, like the pool's workers). Wall time runs from the ``run()`` call to the last result, so it includes
starting the workers and loading the model in each (the Dask cluster itself is started beforehand: it is
long-lived in practice); the start-up part is shown on its own. CPU seconds count every process of the run
(this one, the pool's workers, the Dask workers): on a shared machine, CPU s / wall s is the number of cores
the run actually got, and scans per CPU-minute is the efficiency, free of the other users' load.

Shared locator: T threads pulling scans from one queue, three ways: one locator shared by all threads
(the shipped design: a lock around its one infer request), one locator whose model runs each thread's
batches on that thread's own infer request (the request-pool design, emulated here by wrapping the model),
and one locator per thread.

The distinct phantoms are written once (``--workdir`` keeps them); the N series are hard links to them, so
every series is its own folder but the page cache holds each file once: reading is CPU work in every
configuration. Compare ratios from the same run; the machine is shared.
"""

from __future__ import annotations

import os
import queue
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any


def cohort_series(root: Path, n: int, distinct: int = 8, matrix: int = 512) -> list[Path]:
    """``n`` phantom series folders under ``root``: ``distinct`` abdomen phantoms (written once, reused),
    each hard-linked as many times as needed."""
    from l3edge.phantom import write_phantom

    bases = []
    for seed in range(min(n, distinct)):
        base = root / f"base_{matrix}_{seed}"
        if not (base / "truth.json").exists():
            print(f"[bench] writing phantom {seed} ({matrix}x{matrix}) ...", file=sys.stderr)
            write_phantom(base, seed, "dicom", "abdomen", matrix=matrix, pixel_spacing_mm=0.8 * 512 / matrix)
        bases.append(base)
    out = []
    for i in range(n):
        dst = root / "cohort" / f"scan{i:04d}"
        if not dst.is_dir():
            try:
                shutil.copytree(bases[i % len(bases)], dst, copy_function=os.link)
            except OSError:  # no hard links on this file system
                shutil.copytree(bases[i % len(bases)], dst)
        out.append(dst)
    for p in out:  # into the page cache for every contender alike
        for f in p.iterdir():
            f.read_bytes()
    return out


def _cpu_s() -> tuple[float, dict[int, float]]:
    """CPU seconds of this process and its reaped children, and of each live descendant (Dask workers)."""
    import resource

    import psutil  # a dependency of distributed

    own = sum(
        getattr(resource.getrusage(who), f)
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
        for f in ("ru_utime", "ru_stime")
    )
    live = {}
    for child in psutil.Process().children(recursive=True):
        try:
            t = child.cpu_times()
            live[child.pid] = t.user + t.system
        except psutil.Error:
            pass
    return own, live


def _timed_run(paths: list[str], **kw: Any) -> dict[str, Any]:
    """One run: wall and start-up seconds, and the CPU seconds every process of the run used (on a shared
    machine, CPU s / wall s says how many cores the run actually got)."""
    from l3edge import batch

    own0, live0 = _cpu_s()
    t0 = time.perf_counter()
    run = batch.run(paths, **kw)
    startup = time.perf_counter() - t0
    results = list(run)
    wall = time.perf_counter() - t0
    own1, live1 = _cpu_s()
    cpu = own1 - own0 + sum(t - live0.get(pid, 0.0) for pid, t in live1.items())
    errors = [r.error for r in results if r.error]
    if errors or len(results) != len(paths):
        raise SystemExit(f"cohort run failed: {len(results)} results, errors {errors[:3]}")
    return {"wall_s": wall, "startup_s": startup, "cpu_s": cpu, "found": sum(r.found for r in results)}


def run_config(spec: dict[str, Any]) -> dict[str, Any]:
    """One cohort run as ``spec`` says (paths, workers | dask_workers, load), in this (fresh) process."""
    if not spec.get("dask_workers"):
        return _timed_run(spec["paths"], workers=spec["workers"], load=spec["load"])
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=spec["dask_workers"],
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        silence_logs=40,
    ) as cluster:
        return _timed_run(spec["paths"], dask=cluster.scheduler_address, load=spec["load"])


def _in_fresh_process(spec: dict[str, Any]) -> dict[str, Any]:
    """:func:`run_config` in a new interpreter, as a user's run would be; nothing (idle Dask processes,
    children reaped late) carries over from one run's CPU accounting to the next."""
    import json
    import subprocess

    code = (
        "import json, sys\nfrom tools.bench_cohort import run_config\n"
        "print(json.dumps(run_config(json.loads(sys.stdin.read()))))"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", code], input=json.dumps(spec), capture_output=True, text=True, cwd=root
    )
    if out.returncode != 0:
        raise SystemExit(f"cohort run failed: {out.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def cohort_table(args: Any) -> list[dict[str, Any]]:
    from l3edge.batch import default_workers

    workers = args.workers or default_workers()
    paths = [str(p) for p in cohort_series(args.workdir, args.cohort, matrix=args.matrix)]
    load = {"model": str(args.model) if args.model else None}
    dask_name = f"Dask LocalCluster ({workers} processes x 1 thread)"
    # Each Dask worker's inference gets one thread, as each pool worker's does (the cores shared out).
    dask_load = {**load, "threads": max(1, default_workers() // workers)}
    configs: list[tuple[str, int, dict[str, Any]]] = [
        ("in process (--workers 1)", 1, {"paths": paths, "workers": 1, "load": load}),
        (f"local pool (--workers {workers})", workers, {"paths": paths, "workers": workers, "load": load}),
        (dask_name, workers, {"paths": paths, "dask_workers": workers, "load": dask_load}),
    ]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in configs}
    for rep in range(args.repeat):
        # Alternate the order, so that drift on a shared machine hits every contender alike.
        for name, _, spec in configs if rep % 2 == 0 else configs[::-1]:
            print(f"[bench] {name}, repetition {rep + 1} ...", file=sys.stderr)
            runs[name].append(_in_fresh_process(spec))
    rows = []
    base = statistics.median(r["wall_s"] for r in runs[configs[0][0]])
    pool = statistics.median(r["wall_s"] for r in runs[configs[1][0]])
    for name, n_workers, _ in configs:
        wall = statistics.median(r["wall_s"] for r in runs[name])
        rows.append(
            {
                "config": name,
                "workers": n_workers,
                "scans": len(paths),
                "wall_s": wall,
                "startup_s": statistics.median(r["startup_s"] for r in runs[name]),
                "scans_per_min": 60 * len(paths) / wall,
                "vs_1_worker": base / wall,
                "vs_pool": pool / wall,
                "cpu_s": statistics.median(r["cpu_s"] for r in runs[name]),
                "found": runs[name][0]["found"],
            }
        )
    print(
        f"\ncohort: {len(paths)} phantom series ({args.matrix}x{args.matrix} slices), "
        f"{os.cpu_count()} cores, median of {args.repeat}, load average {os.getloadavg()[0]:.2f}"
    )
    print(
        "| back end | workers | wall s | of which start-up s | scans/min | x 1 worker | x local pool "
        "| CPU s | cores used | scans per CPU-min | found |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['config']} | {r['workers']} | {r['wall_s']:.1f} | {r['startup_s']:.1f} "
            f"| {r['scans_per_min']:.1f} "
            f"| {r['vs_1_worker']:.2f}x | {r['vs_pool']:.2f}x | {r['cpu_s']:.1f} "
            f"| {r['cpu_s'] / r['wall_s']:.2f} "
            f"| {60 * r['scans'] / r['cpu_s']:.1f} | {r['found']}/{r['scans']} |"
        )
    return rows


def _request_per_thread(model: Any) -> Any:
    """``model`` (an OVModel) running each thread's batches on that thread's own infer request, without the
    lock: the request-pool design, which l3edge measured against its lock (dynamic-shape IRs only)."""
    import numpy as np

    local = threading.local()
    compiled = model._compiled  # the bench's view inside OVModel, to build the alternative design

    def run(batch: Any) -> Any:
        request = getattr(local, "request", None)
        if request is None:
            request = local.request = compiled.create_infer_request()
        request.infer({0: np.ascontiguousarray(batch, dtype=np.float32)})
        return np.array(request.get_output_tensor(0).data, dtype=np.float32, copy=True)

    model.run = run
    return model


def _threads_run(locators: list[Any], paths: list[Any]) -> float:
    """Seconds for len(locators) threads (thread i uses locators[i]) to predict every path (or in-memory
    projection) once."""
    todo: queue.Queue[Any] = queue.Queue()
    for p in paths:
        todo.put(p)
    errors: list[BaseException] = []

    def work(locator: Any) -> None:
        while True:
            try:
                p = todo.get_nowait()
            except queue.Empty:
                return
            try:
                locator.predict(p) if isinstance(p, str) else locator.predict_projection(p)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

    threads = [threading.Thread(target=work, args=(loc,)) for loc in locators]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"shared-locator run failed: {errors[0]!r}")
    return time.perf_counter() - t0


def shared_locator_table(args: Any) -> list[dict[str, Any]]:
    from l3edge.locator import L3Locator

    items: list[Any]
    if args.in_memory:  # the model's stages alone: frontal MIPs of phantoms, no reading
        from l3edge.phantom import fast_projection

        items = [fast_projection(i % 8, 2.0, "abdomen")[0] for i in range(args.scans)]
    else:
        items = [str(p) for p in cohort_series(args.workdir, args.scans, matrix=args.matrix)]
    shared = L3Locator.load(args.model)  # as shipped: a lock around the one infer request
    pooled = L3Locator.load(args.model)
    _request_per_thread(pooled.model)
    if pooled.refiner is not None:
        _request_per_thread(pooled.refiner)
    rows = []
    for n in args.shared_locator:
        own = [L3Locator.load(args.model) for _ in range(n)]
        times: dict[str, list[float]] = {"shared": [], "pool": [], "own": []}
        for rep in range(args.repeat):
            order = [("shared", [shared] * n), ("pool", [pooled] * n), ("own", own)]
            for name, locs in order if rep % 2 == 0 else order[::-1]:
                times[name].append(_threads_run(locs, items))
        med = {k: statistics.median(v) for k, v in times.items()}
        rows.append({"threads": n, **{f"{k}_scans_per_min": 60 * len(items) / v for k, v in med.items()}})
    what = "in-memory phantom MIPs (no reading)" if args.in_memory else "phantom DICOM series"
    print(f"\nthreads on one locator: {len(items)} {what} per run, median of {args.repeat}")
    print(
        "| threads | one shared locator (lock, as shipped) scans/min | one shared locator, a request per "
        "thread (pool) | one locator per thread | shared / per thread | lock / pool |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        s, pl, o = r["shared_scans_per_min"], r["pool_scans_per_min"], r["own_scans_per_min"]
        print(f"| {r['threads']} | {s:.1f} | {pl:.1f} | {o:.1f} | {s / o:.2f}x | {s / pl:.2f}x |")
    return rows
