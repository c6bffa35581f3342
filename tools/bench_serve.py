"""Load on the service: ``l3edge serve --http --dicom`` (one process, one model) under concurrent clients.

HTTP: ``--requests`` uploads from ``--clients`` concurrent httpx clients, cycling over a real scan from
``../shared/data/real_dev`` (zipped into a temporary folder) and small phantoms (zipped); DICOM: ``--series``
phantom studies uploaded to a throwaway Orthanc, then all sent to the node at once (one C-STORE job each,
started together), with the SC and SR sent back. Checks that every answer equals ``l3edge predict --json`` for
the same study (all fields but path, timings and file locations), that none is lost or duplicated (distinct
result ids; one row per series), and prints latency median and p95, the ratio of the median latency to the
in-process prediction time of the same studies (the CLI's ``timings_ms.total``: the service's overhead
and queueing), and the server's peak RSS (VmHWM).

    python -m tools.bench_serve [--requests 50] [--clients 10] [--series 20] [--workers 2]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tools.service import ORTHANC, ROOT, Orthanc, free_port, running, serve, zip_folder

REAL = ROOT.parent / "shared" / "data" / "real_dev" / "abdomen_ct_to_sacrum_l3"
SMALL = {"matrix": 128, "pixel_spacing_mm": 3.2, "slice_spacing_mm": 5.0, "slice_thickness_mm": 5.0}
VOLATILE = {"path", "timings_ms", "qa_path", "export_path", "id"}


def _key(d: dict) -> dict:
    return {k: v for k, v in d.items() if k not in VOLATILE}


def cli_answers(paths: list[Path]) -> dict[str, dict]:
    """``l3edge predict --json`` for each path (one process, one worker), by path."""
    cmd = [sys.executable, "-m", "l3edge.cli", "predict", *map(str, paths), "--json", "-q", "--workers", "1"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    rows = [json.loads(ln) for ln in out.stdout.splitlines() if ln.startswith("{")]
    return {r["path"]: r for r in rows}


def phantoms(root: Path, seeds: range) -> list[Path]:
    from l3edge.phantom import write_phantom

    out = []
    for seed in seeds:
        write_phantom(root / f"ph{seed}", seed, "dicom", "abdomen", **SMALL)
        out.append(root / f"ph{seed}")
    return out


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, round(q * (len(v) - 1)))]


def http_load(base: str, studies: list[Path], cli: dict[str, dict], n: int, clients: int) -> dict:
    import httpx

    def one(i: int) -> tuple[float, int, dict | None, Path]:
        study = studies[i % len(studies)]
        t = time.perf_counter()
        with study.open("rb") as f:
            r = httpx.post(f"{base}/v1/predict", files=[("file", (study.name, f))], timeout=600)
        return time.perf_counter() - t, r.status_code, r.json() if r.status_code == 200 else None, study

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        answers = list(pool.map(one, range(n)))
    wall = time.perf_counter() - t0
    ok = [a for a in answers if a[1] == 200]
    equal = sum(_key(a[2]) == _key(cli[str(a[3])]) for a in ok if a[2] is not None)
    ids = {a[2]["id"] for a in ok if a[2] is not None}
    lat = [a[0] for a in answers]
    inproc = statistics.median(cli[str(a[3])]["timings_ms"]["total"] / 1000 for a in answers)
    return {
        "answers": len(ok),
        "equal": equal,
        "distinct": len(ids),
        "median": statistics.median(lat),
        "p95": pct(lat, 0.95),
        "wall": wall,
        "ratio": statistics.median(lat) / inproc,
    }


def dicom_load(orthanc: Orthanc, studies: list[Path], cli: dict[str, dict], out: Path) -> dict:
    import httpx

    base = orthanc.base
    ids = {}
    for s in studies:
        r = httpx.post(
            f"{base}/instances", content=zip_folder(s, s.with_suffix(".zip"), method=0).read_bytes()
        )
        ids[s] = r.json()[0]["ParentStudy"]
    import pydicom

    uid_of = {}
    for s in studies:
        uid_of[pydicom.dcmread(next(s.glob("*.dcm")), stop_before_pixels=True).SeriesInstanceUID] = s
    start = threading.Barrier(len(studies))
    t0 = time.perf_counter()

    def send(s: Path) -> int:
        start.wait()
        r = httpx.post(f"{base}/modalities/l3edge/store", content=ids[s], timeout=600)
        return int(r.json().get("FailedInstancesCount", -1))

    with ThreadPoolExecutor(len(studies)) as pool:
        failed = sum(pool.map(send, studies))
    seen: dict[str, float] = {}
    rows: list[dict] = []
    deadline = time.monotonic() + 900
    while len(seen) < len(studies) and time.monotonic() < deadline:
        rows = [json.loads(ln) for ln in out.read_text().splitlines()] if out.is_file() else []
        for r in rows:
            seen.setdefault(r["series_instance_uid"], time.perf_counter() - t0)
        time.sleep(0.1)
    equal = sum(_key(r) == _key(cli[str(uid_of[r["series_instance_uid"]])]) for r in rows)
    back = sum(len(httpx.get(f"{base}/studies/{i}/series").json()) - 1 for i in ids.values())
    lat = list(seen.values())
    return {
        "answers": len(rows),
        "distinct": len(seen),
        "equal": equal,
        "failed_stores": failed,
        "sent_back": back,
        "median": statistics.median(lat) if lat else float("nan"),
        "p95": pct(lat, 0.95) if lat else float("nan"),
        "wall": max(lat) if lat else float("nan"),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=50)
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--series", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="l3edge-bench-serve-") as tmp_s:
        tmp = Path(tmp_s)
        studies = [zip_folder(p, p.with_suffix(".zip")) for p in phantoms(tmp / "ph", range(1, 5))]
        if REAL.is_dir():
            studies.insert(0, zip_folder(REAL, tmp / "real.zip", method=0))
        else:
            print(f"({REAL} is missing: phantoms only)")
        dicom = phantoms(tmp / "dicom", range(100, 100 + args.series)) if ORTHANC.exists() else []
        cli = cli_answers(studies + dicom)
        http_port, out = free_port(), tmp / "rows.jsonl"
        with running(tmp / "orthanc") if dicom else contextlib.nullcontext() as orthanc:
            node = []
            if orthanc is not None:
                node = ["--dicom", f"127.0.0.1:{orthanc.node_port}", "--idle", "2", "--out", str(out)]
                node += ["--spool", str(tmp / "spool"), "--send-to", orthanc.send_to]
            cmd = ["--http", str(http_port), "--workers", str(args.workers), "--queue", "100", *node]
            with serve(cmd, tmp / "server.log", f"http://127.0.0.1:{http_port}/health") as proc:
                h = http_load(f"http://127.0.0.1:{http_port}", studies, cli, args.requests, args.clients)
                h["rss"] = peak_rss_mb(proc.pid)
                d = dicom_load(orthanc, dicom, cli, out) if dicom else None
                rss = peak_rss_mb(proc.pid)
    real = "1 real + " if REAL.is_dir() else ""
    print(f"{len(studies)} studies over HTTP ({real}phantoms), workers {args.workers}")
    cols = "answered | equal to CLI | distinct | latency median s | p95 s | wall s | median / in-process"
    print(f"| load | {cols} | peak RSS MiB |")
    print("|---" * 9 + "|")
    head = f"HTTP {args.requests} requests, {args.clients} clients"
    print(
        f"| {head} | {h['answers']} | {h['equal']} | {h['distinct']} | {h['median']:.2f} | {h['p95']:.2f} "
        f"| {h['wall']:.1f} | {h['ratio']:.1f} | {h['rss']:.0f} |"
    )
    if d is not None:
        head = f"DICOM {args.series} series at once (Orthanc)"
        print(
            f"| {head} | {d['answers']} | {d['equal']} | {d['distinct']} | {d['median']:.2f} "
            f"| {d['p95']:.2f} | {d['wall']:.1f} | - | {rss:.0f} |"
        )
        back = f"{d['sent_back']} of {2 * args.series}"
        print(f"failed C-STOREs: {d['failed_stores']}; SC and SR series back in Orthanc: {back}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
