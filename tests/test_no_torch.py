"""The runtime never imports torch (it is a training-only dependency)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
