"""l3edge as a service: an HTTP API (``l3edge.serve.http``) and a DICOM node (``l3edge.serve.dicom_node``).

Both need the ``serve`` extra (``pip install "l3edge[serve]"``: FastAPI, uvicorn, python-multipart,
pynetdicom, highdicom); nothing here is imported by ``import l3edge`` or ``import l3edge.cli``.
:func:`require` checks the extra before anything starts, so a plain install says what to install.
"""

from __future__ import annotations

import importlib

from l3edge.errors import UsageError

HTTP_MODULES = ("fastapi", "uvicorn", "python_multipart")
DICOM_MODULES = ("pynetdicom", "highdicom")


def require(modules: tuple[str, ...]) -> None:
    """Import ``modules`` or say which extra provides them.

    Raises:
        UsageError: one of them is not installed.
    """
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            raise UsageError(
                f'needs the serve extra ({name} is not installed): pip install "l3edge[serve]"'
            ) from None
