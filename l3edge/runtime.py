"""The OpenVINO model: find it, check its metadata, compile it, run batches.

The only module importing openvino. Lookup order (never the network): an explicit path, then
the ``L3EDGE_MODEL`` environment variable, then the model bundled as package data
(``l3edge/models/default.xml``).

Compiled models are kept in OpenVINO's model cache (``CACHE_DIR``) so that a later process imports the
compiled model instead of compiling it again (see :func:`cache_folder`); a load that finds the model's blob
and metadata there compiles from the file without parsing the IR (``l3edge.model_cache``).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from l3edge import model_cache
from l3edge.errors import ModelError
from l3edge.metadata import RT_INFO_KEY, ModelMetadata
from l3edge.model_cache import CACHE_ENV_VAR as CACHE_ENV_VAR  # re-exported: the cache's public names
from l3edge.model_cache import CACHE_OFF as CACHE_OFF
from l3edge.model_cache import CacheDir
from l3edge.model_cache import cache_root as cache_root


def _import_openvino_runtime() -> None:
    """Import openvino without the model converter its ``__init__`` pulls in (``openvino.tools.ovc``, inside
    a ``try: ... except ImportError``): the runtime only reads IRs, and the converter is about half of
    openvino's import time (0.1 s or more), and starts OpenVINO's telemetry client on every import. Whoever
    converts a model in this process still can: ``openvino.convert_model`` imports it on first call."""
    if "openvino" in sys.modules:
        return
    sys.modules["openvino.tools.ovc"] = None  # type: ignore[assignment]  # an ImportError for that import
    try:
        import openvino
    except ImportError:  # an openvino that needs it after all: the usual import
        del sys.modules["openvino.tools.ovc"]
        import openvino
    if "openvino.tools.ovc" in sys.modules and sys.modules["openvino.tools.ovc"] is None:
        del sys.modules["openvino.tools.ovc"]  # a later `import openvino.tools.ovc` works as usual
    if not hasattr(openvino, "convert_model"):

        def convert_model(*args: Any, **kwargs: Any) -> Any:
            from openvino.tools.ovc import convert_model as convert

            return convert(*args, **kwargs)

        openvino.convert_model = convert_model


_import_openvino_runtime()
import openvino as ov  # noqa: E402

log = logging.getLogger(__name__)

ENV_VAR = "L3EDGE_MODEL"
BUNDLED_NAME = "default.xml"
PRECISIONS = ("f32", "f16", "bf16")


@dataclass(frozen=True)
class ModelLocation:
    """Where the model was found."""

    path: Path
    """The IR's .xml file."""
    source: str
    """How it was found: ``argument``, ``env L3EDGE_MODEL`` or ``bundled``."""


def _bundled_model() -> Path | None:
    ref = resources.files("l3edge") / "models" / BUNDLED_NAME
    # The package is installed as plain files (setuptools package data), so the traversable is a real path.
    return Path(str(ref)) if ref.is_file() else None


def resolve_model(model: str | os.PathLike[str] | None = None) -> ModelLocation:
    """Find the model: explicit path, then ``$L3EDGE_MODEL``, then the bundled model.

    Raises:
        ModelError: nothing found, with the ways to pass a model.
    """
    if model is not None and str(model) != "":
        return ModelLocation(Path(model), "argument")
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return ModelLocation(Path(env), f"env {ENV_VAR}")
    bundled = _bundled_model()
    if bundled is not None:
        return ModelLocation(bundled, "bundled")
    raise ModelError(
        "no model given and this l3edge has no bundled model; pass --model PATH.xml (API: model=...) "
        f"or set {ENV_VAR}=PATH.xml"
    )


def _check_ir_files(xml: Path) -> Path:
    """Refuse early, with a short message, what OpenVINO would reject with a long one. Returns the .bin."""
    if xml.is_dir():
        raise ModelError(f"{xml} is a folder; pass the model's .xml file")
    if not xml.is_file():
        raise ModelError(f"model file {xml} does not exist")
    if xml.suffix.lower() != ".xml":
        raise ModelError(f"{xml} is not an OpenVINO IR (.xml + .bin); export the model with tools/export.py")
    with xml.open("rb") as f:
        head = f.read(1024).lstrip()
    if not (head.startswith(b"<?xml") or head.startswith(b"<net")):
        raise ModelError(f"{xml} is not an OpenVINO IR .xml file")
    weights = xml.with_suffix(".bin")
    if not weights.is_file():
        raise ModelError(f"the model's weights {weights.name} are missing next to {xml}")
    return weights


def read_metadata(model: ov.Model, where: str | os.PathLike[str] = "model") -> ModelMetadata:
    """The l3edge metadata of a read (uncompiled) model.

    Raises:
        ModelError: no metadata, unsupported schema version, or invalid content.
    """
    if not model.has_rt_info(RT_INFO_KEY):
        raise ModelError(
            f"{where} has no l3edge metadata (rt_info key {RT_INFO_KEY!r}); it was not exported by "
            "tools/export.py"
        )
    text = model.get_rt_info(RT_INFO_KEY).astype(str)
    return ModelMetadata.from_json(text)


def cache_folder(xml: Path, weights: Path, cache_dir: CacheDir = None) -> Path | None:
    """The folder this OpenVINO caches the model's compiled form in (``l3edge.model_cache.cache_folder``)."""
    return model_cache.cache_folder(xml, weights, cache_dir, ov.get_version())


def _read(xml: Path) -> ov.Model:
    weights = _check_ir_files(xml)
    try:
        return ov.Core().read_model(model=str(xml), weights=str(weights))
    except RuntimeError as exc:
        first = next((ln for ln in str(exc).splitlines() if ln.strip() and "Exception from" not in ln), "")
        raise ModelError(f"OpenVINO cannot read {xml}: {first.strip()[:200]}") from exc


_READ_AHEAD: dict[tuple[object, ...], ov.Model] = {}
"""The model :func:`load_metadata` last read, kept for the :meth:`OVModel.load` that usually follows (the CLI
checks ``--level`` before loading), so that the IR is parsed once. Keyed by the files' path, size and mtime;
taken (not shared) by the load."""
_READ_AHEAD_LOCK = threading.Lock()


def _files_key(xml: Path) -> tuple[object, ...]:
    a, b = xml.stat(), xml.with_suffix(".bin").stat()
    return (str(xml.resolve()), a.st_size, a.st_mtime_ns, b.st_size, b.st_mtime_ns)


def load_metadata(path: str | os.PathLike[str], cache_dir: CacheDir = None) -> ModelMetadata:
    """Read only the metadata of the IR at ``path`` (no compilation): from the compiled-model cache
    (``cache_dir``, see :func:`cache_root`) when a load of this model content kept it there."""
    xml = Path(path)
    cache = cache_folder(xml, _check_ir_files(xml), cache_dir)
    meta = _cached_metadata(cache)
    if meta is not None:
        return meta
    model = _read(xml)
    meta = read_metadata(model, xml)
    with _READ_AHEAD_LOCK:
        _READ_AHEAD.clear()  # one at most
        _READ_AHEAD[_files_key(xml)] = model
    return meta


def _read_once(xml: Path) -> ov.Model:
    """The model read by the last :func:`load_metadata` of these very files, else a fresh read."""
    with _READ_AHEAD_LOCK:
        if _READ_AHEAD:
            try:
                model = _READ_AHEAD.pop(_files_key(xml), None)
            except OSError:
                model = None
            if model is not None:
                return model
    return _read(xml)


class OVModel:
    """A compiled l3edge IR with one infer request. Safe to share between threads.

    An OpenVINO infer request runs one inference at a time (a second caller got ``RuntimeError('Infer Request
    is busy')``, or another caller's output), so :meth:`run` holds a lock around it. A request per thread
    measured no better (``tools/bench.py --shared-locator``, README "Many scans"): the model is compiled for
    latency, so each run already uses every inference thread, and concurrent runs only compete for the same
    cores. The work around the model (reading, resampling, the fit) runs in parallel.
    """

    def __init__(
        self,
        path: Path,
        metadata: ModelMetadata,
        compiled: ov.CompiledModel,
        device: str,
        inference_precision: str,
    ) -> None:
        self.path = path
        """The IR's .xml file."""
        self.metadata = metadata
        """The model's l3edge metadata."""
        self.device = device
        """OpenVINO device the model was compiled for."""
        self.inference_precision = inference_precision
        """Precision OpenVINO actually uses for inference (e.g. ``f32``, ``bf16``)."""
        self._compiled = compiled
        self._request = compiled.create_infer_request()
        self._core: ov.Core | None = None
        self._model: ov.Model | None = None
        self._config: dict[str, Any] = {}
        self._static_shape: tuple[int, ...] | None = None
        self._by_shape: dict[tuple[int, ...], ov.InferRequest] = {}
        self._lock = threading.Lock()

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        device: str = "CPU",
        threads: int | None = None,
        inference_precision: str | None = None,
        cache_dir: CacheDir = None,
    ) -> OVModel:
        """Read, check and compile the IR at ``path``.

        A model whose content was read, checked and compiled before with this cache is compiled from its
        file (OpenVINO imports the blob) with the metadata kept beside the blob: the IR is not parsed again.

        Args:
            path: the .xml file (its .bin next to it).
            device: OpenVINO device name.
            threads: INFERENCE_NUM_THREADS (None: OpenVINO's choice).
            inference_precision: ``f32`` forces FP32 arithmetic (some CPUs default to bf16); None leaves
                OpenVINO's choice.
            cache_dir: where compiled models are cached (:func:`cache_root`); False: no cache.

        Raises:
            ModelError: missing or unreadable model, missing metadata, or a model OpenVINO cannot compile.
        """
        xml = Path(path)
        weights = _check_ir_files(xml)
        cache = cache_folder(xml, weights, cache_dir)
        meta = _cached_metadata(cache)
        model = None
        if meta is None:
            model = _read_once(xml)
            meta = read_metadata(model, xml)
            _check_inputs(model.inputs, meta, xml)
        config = _compile_config(threads, inference_precision)
        if cache is not None:
            config["CACHE_DIR"] = str(cache)
        # With a cache, compile from the file: OpenVINO keys the blob by the path (our folder is keyed by the
        # content), so the next process finds it without parsing the IR; a model object is keyed by hashing
        # its whole graph, every time.
        source: ov.Model | str = model if model is not None and cache is None else str(xml)
        compiled = _compile(xml, source, device, config)
        if model is None:
            _check_inputs(compiled.inputs, meta, xml)  # checked on this content before; cheap to repeat
        else:
            model_cache.write_cached_metadata(cache, model.get_rt_info(RT_INFO_KEY).astype(str))
        try:
            used = _precision_name(compiled.get_property("INFERENCE_PRECISION_HINT"))
        except RuntimeError:  # devices without the property
            used = inference_precision or "default"
        log.info(
            "model %s (%s %s) compiled for %s, precision %s, cache %s",
            xml,
            meta.name,
            meta.version,
            device,
            used,
            cache or "off",
        )
        out = cls(xml, meta, compiled, device, used)
        shape = compiled.inputs[0].get_partial_shape()
        if shape.is_static:
            # A static IR (not what tools/export.py writes, but legal) is reshaped and recompiled per shape.
            out._core, out._model, out._config = ov.Core(), model or _read(xml), config
            out._static_shape = tuple(int(d) for d in shape.to_shape())
            out._by_shape[out._static_shape] = out._request
        return out

    def _request_for(self, shape: tuple[int, ...]) -> ov.InferRequest:
        if self._static_shape is None:
            return self._request
        request = self._by_shape.get(shape)
        if request is None:
            assert self._model is not None and self._core is not None
            self._model.reshape({0: ov.PartialShape(list(shape))})
            request = self._core.compile_model(self._model, self.device, self._config).create_infer_request()
            self._by_shape[shape] = request
        return request

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Run a float32 batch [B, C, H, W]; returns the raw output (e.g. [B, 2, K, 1]) as a new array.

        Thread-safe (one run at a time).
        """
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if x.ndim != 4:
            raise ValueError(f"expected a [B, C, H, W] batch, got shape {x.shape}")
        with self._lock:  # one inference at a time on the one request (see the class docstring)
            request = self._request_for(tuple(int(d) for d in x.shape))
            request.infer({0: x})
            return np.array(request.get_output_tensor(0).data, dtype=np.float32, copy=True)

    __call__ = run


def _precision_name(value: object) -> str:
    """OpenVINO element type -> short name (``f32``, ``bf16``, ...)."""
    get_type_name = getattr(value, "get_type_name", None)
    return str(get_type_name()) if callable(get_type_name) else str(value)


def _cached_metadata(cache: Path | None) -> ModelMetadata | None:
    """The metadata an earlier load of this model content kept in its cache folder; None when there is none
    (or it does not parse: the model is then read as without it)."""
    text = model_cache.read_cached_metadata(cache)
    if text is None:
        return None
    try:
        return ModelMetadata.from_json(text)
    except ModelError:
        return None


def _check_inputs(inputs: Any, meta: ModelMetadata, xml: Path) -> None:
    names = {n for inp in inputs for n in inp.get_names()}
    if len(inputs) != 1 or meta.input_name not in names:
        raise ModelError(f"{xml} must have exactly one input named {meta.input_name!r} (has {sorted(names)})")
    rank = inputs[0].get_partial_shape().rank
    if rank.is_static and rank.get_length() != 4:
        raise ModelError(f"{xml}: the input must be NCHW (rank 4), not rank {rank.get_length()}")


def _compile_config(threads: int | None, inference_precision: str | None) -> dict[str, Any]:
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
    if threads is not None:
        if threads < 1:
            raise ModelError(f"threads must be >= 1, not {threads}")
        config["INFERENCE_NUM_THREADS"] = int(threads)
    if inference_precision is not None:
        if inference_precision not in PRECISIONS:
            raise ModelError(f"inference precision must be one of {PRECISIONS}, not {inference_precision!r}")
        config["INFERENCE_PRECISION_HINT"] = inference_precision
    return config


def _compile(xml: Path, model: ov.Model | str, device: str, config: dict[str, Any]) -> ov.CompiledModel:
    try:
        return ov.Core().compile_model(model, device, config)
    except RuntimeError as exc:
        first = next((ln for ln in str(exc).splitlines() if ln.strip() and "Exception from" not in ln), "")
        raise ModelError(f"OpenVINO cannot compile {xml} for {device}: {first.strip()[:200]}") from exc
