"""The runtime never imports torch (it is a training-only dependency)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def test_cli_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "import importlib, importlib.util\n"
        "import l3edge, l3edge.cli, l3edge.locator, l3edge.runtime, l3edge.qa, l3edge.output\n"
        "import l3edge.batch, l3edge.pool, l3edge.inputs, l3edge.report\n"
        "for name in ('l3edge.scan', 'l3edge.dicom', 'l3edge.nifti', 'l3edge.phantom'):\n"
        "    if importlib.util.find_spec(name) is not None:\n"
        "        importlib.import_module(name)\n"
        "from typer.testing import CliRunner\n"
        "r = CliRunner().invoke(l3edge.cli.app, ['--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "r = CliRunner().invoke(l3edge.cli.app, ['predict', '--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "assert 'dask' not in sys.modules and 'distributed' not in sys.modules, 'dask was imported'\n"
        "r = CliRunner().invoke(l3edge.cli.app, ['serve', '--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "stack = ('fastapi', 'starlette', 'uvicorn', 'pynetdicom', 'highdicom')\n"
        "heavy = [m for m in stack if m in sys.modules]\n"
        "assert not heavy, f'the server stack was imported: {heavy}'\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")


HEAVY = ("openvino", "pydicom", "numpy", "scipy", "PIL", "imagecodecs", "nibabel", "torch", "dask", "rich",
         "pydantic")  # fmt: skip
"""What ``import l3edge.cli`` must leave for the commands that use it: each costs start-up time (OpenVINO,
pydicom and numpy together are most of a one-scan run's)."""


def _run(code: str, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_cli_import_is_light() -> None:
    code = (
        "import sys\nimport l3edge, l3edge.cli\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "assert not heavy, f'import l3edge.cli imported {heavy}'\nprint('ok')\n"
    )
    assert _run(code).strip() == "ok"


def test_each_command_imports_only_what_it_uses(tmp_path: Path, tiny_model: Path) -> None:
    """Help and version need no model, no DICOM and no numpy; a phantom needs no OpenVINO; a NIfTI scan
    needs no DICOM reader (nibabel imports pydicom itself, so that is checked on l3edge's DICOM modules)."""
    from tests.dicom_factory import make_volume, write_nifti

    nifti = write_nifti(tmp_path / "scan.nii.gz", make_volume(nz=20, ny=24, nx=32))
    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom l3edge.cli import app\n"
        "def run(*args, absent=()):\n"
        "    r = CliRunner().invoke(app, list(args))\n"
        "    assert r.exit_code == 0, r.output\n"
        "    there = [m for m in absent if m in sys.modules]\n"
        "    assert not there, f'{args[0]} imported {there}'\n"
        "run('--version', absent=('numpy', 'openvino', 'pydicom', 'rich', 'pydantic'))\n"
        "run('predict', '--help', absent=('numpy', 'openvino', 'pydicom'))\n"
        "run('phantom', sys.argv[3], '--seed', '1', absent=('openvino',))\n"
        "dicom = ('l3edge.dicom', 'l3edge.dicom_decode', 'l3edge.dicom_header')\n"
        "run('predict', sys.argv[1], '--model', sys.argv[2], '--json', '--workers', '1', absent=dicom)\n"
        "assert 'openvino' in sys.modules and 'nibabel' in sys.modules  # the checks can fail\n"
        "print('ok')\n"
    )
    assert _run(code, str(nifti), str(tiny_model), str(tmp_path / "phantom")).strip().endswith("ok")


def test_a_dicom_scan_leaves_masked_arrays_and_scipy_out(dicom_series: Any, tiny_model: Path) -> None:
    """numpy's median, percentile and unique import numpy.ma (about 10 ms of a one-scan run); l3edge.numeric
    gives the same numbers without it. scipy is not needed to answer a DICOM scan either."""
    scan = dicom_series("s")
    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom l3edge.cli import app\n"
        "args = ['predict', sys.argv[1], '--model', sys.argv[2], '--json', '--workers', '1']\n"
        "r = CliRunner().invoke(app, args)\n"
        "assert r.exit_code == 0 and '\"found\": true' in r.output, r.output\n"
        "there = [m for m in ('numpy.ma', 'scipy') if m in sys.modules]\n"
        "assert not there, f'predict imported {there}'\nprint('ok')\n"
    )
    assert _run(code, str(scan), str(tiny_model)).strip().endswith("ok")


def test_the_runtime_leaves_openvinos_converter_out_but_reachable() -> None:
    code = (
        "import sys\nimport l3edge.runtime\nimport openvino\n"
        "left = [m for m in ('openvino.tools.ovc', 'openvino_telemetry') if m in sys.modules]\n"
        "assert not left, f'imported {left}'\n"
        "from openvino import convert_model\nassert callable(convert_model)\n"
        "import openvino.tools.ovc\nassert callable(openvino.tools.ovc.convert_model)\nprint('ok')\n"
    )
    assert _run(code).strip() == "ok"
