"""Saving a fitted method to one file and loading it back: ``save_model`` / ``load_model``.

A model file (``*.lbmodel``) is a zip archive holding

- ``contract.json``: the :class:`ModelContract`, what the model expects of its inputs (task kind,
  bands and their order, pixel scale, stamp shape, units and zero point, preprocessing, the
  modeling targets or the photo-z input columns and the catalogue cleaning) and what it was
  trained on (task name and version, split hashes, lensbench version and git commit, date);
- ``manifest.json``: the format, the registered method name, its parameters and the persistence
  family the payload is written in;
- the payload, by family (a method class names its family in its ``persistence`` attribute):

  ``"net-finder"``   CNN finders: the weights-only torch checkpoint of deep/checkpoint.py;
  ``"net-regressor"`` the ResNet regressors: their weights-only torch file (deep/regression.py);
  ``"state"``       (default) every other method: its fitted attributes as a tree in
                    ``state.json`` whose leaves are numpy arrays (``arrays.npz``, read with
                    ``allow_pickle=False``), scikit-learn estimators (skops files), xgboost
                    models (xgboost's own JSON), torch modules (weights-only state dicts plus the
                    name of the builder and its plain keyword arguments), a few lensbench helper
                    objects (a fixed table below, restored as attribute dicts) and nested methods
                    (TwoStep: a model archive inside the archive); a method whose state
                    holds settings checks them as they are read (``check_restored_state``:
                    NetZ's recorded image rendering);
  ``None``          nothing to save (the method fits each lens when it predicts).

What a model file is trusted to do: nothing but hold numbers. It is never unpickled. The method
class is found only through the registry (baselines/registry.py) by name, and its parameters are
checked against the class's ``__init__``; skops files load only scikit-learn, numpy and scipy
classes (the list of types each file needs is computed with ``skops.io.get_untrusted_types`` and
checked before loading, never ``trusted=True``); torch files load weights-only and each network
is first built on the meta device to compare its shapes with the stored weights. A file that
breaks any of these is refused with a ValueError naming the file and the field.

No torch or xgboost import at module level: the deep parts are imported when a file needs them.
"""

from __future__ import annotations

import inspect
import io
import json
import math
import tempfile
import types
import typing
import zipfile
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from lensbench.baselines.registry import METHODS, registered_name, resolve_method
from lensbench.datasets.files import atomic_open
from lensbench.datasets.typecheck import short_repr

FORMAT = "lensbench-model/1"
SUFFIX = ".lbmodel"
NANOMAGGY_UNITS = "nanomaggies"
NANOMAGGY_ZERO_POINT = 22.5  # AB magnitude of 1 nanomaggy
FAMILIES = ("net-finder", "net-regressor", "state")
MAX_NESTING = 4  # methods inside methods (TwoStep: 1)
MAX_RATIO = 1000  # largest inflation of a zip member (numbers compress far less)

_MISSING = object()
_SCALARS = (type(None), bool, int, float, str)

# The types beyond skops' own trusted defaults that the registered methods' fitted state
# holds (HistGradientBoosting's trees, the k-d or ball tree of NearestNeighbors with its
# Euclidean metric, MLPRegressor's optimiser), by full name, compared as text: a name from a
# file is never imported. A wider rule ("any class of sklearn, numpy or scipy") let a model file
# build numpy's DataSource, whose __del__ deletes a folder the file names. A scikit-learn that
# moves one of these classes makes its files refused, naming the type, not loaded.
_SKOPS_TYPES = frozenset({
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
    "sklearn.neighbors._ball_tree.BallTree",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
})
# The xgboost scikit-learn wrappers a "state" payload may hold.
_XGBOOST_CLASSES = ("XGBClassifier", "XGBRegressor")
# lensbench helper objects a "state" payload may hold: restored as their attribute dicts.
_OBJECTS = {
    "photoz-features": "lensbench.baselines.photoz:PhotozFeatures",
    "preprocessor": "lensbench.deep.preprocess:Preprocessor",
    "netz-config": "lensbench.deep.photoz:NetZConfig",
    "pdfmlp-config": "lensbench.deep.photoz_pdf:PDFMLPConfig",
}
_OBJECT_NAMES = {target: name for name, target in _OBJECTS.items()}
# Builders of the torch modules of a "state" payload: a module built by one of these carries
# ``build_spec = {"builder": name, "kwargs": {...}}`` (plain data).
_BUILDERS = {
    "build_net": "lensbench.deep.nets:build_net",
    "netz": "lensbench.deep.photoz:build_netz",
    "pdfmlp": "lensbench.deep.photoz_pdf:build_pdfmlp",
}


# --------------------------------------------------------------------------- shared checks


def refuse(path, field: str, expected: str, value=_MISSING) -> ValueError:
    """The error for a field that is not what it should be (the caller raises it)."""
    if value is _MISSING:
        got = "it is missing"
    else:
        got = f"got {type(value).__name__} {short_repr(value)}"
    return ValueError(f"{path}: field {field!r}: expected {expected}, {got}")


def is_plain(value) -> bool:
    """Scalars, and lists/tuples/str-keyed dicts of plain values."""
    if isinstance(value, _SCALARS):
        return True
    if isinstance(value, (list, tuple)):
        return all(is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_plain(v) for k, v in value.items())
    return False


def _matches(annotation, value) -> bool:
    """Whether ``value`` (plain data) is of the ``annotation`` type; an int passes for a float
    and an integral float for an int, as JSON and command lines write them."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    for option in typing.get_args(annotation) if union else (annotation,):
        option = typing.get_origin(option) or option
        if option is inspect.Parameter.empty:
            return isinstance(value, _SCALARS) or is_plain(value)
        if option is None or option is type(None):
            if value is None:
                return True
        elif isinstance(value, bool):
            if option is bool:
                return True
        elif option is float and isinstance(value, (int, float)):
            return True
        elif option is int and isinstance(value, float) and value.is_integer():
            return True
        elif option is tuple and isinstance(value, list) and is_plain(value):
            return True  # JSON writes tuples as lists
        elif isinstance(option, type) and isinstance(value, option) and is_plain(value):
            return True
    return False


def checked_params(path, cls: type, params) -> dict:
    """``params`` when it is a dict of parameters ``cls.__init__`` takes, each of the type the
    signature declares."""
    signature = inspect.signature(cls.__init__)
    hints = typing.get_type_hints(cls.__init__)
    known = [name for name, p in signature.parameters.items()
             if name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
        raise refuse(path, "params", f"a dict of {cls.__name__} parameters",
                     params if params is not None else _MISSING)
    for key, value in params.items():
        if key not in known:
            raise ValueError(f"{path}: field 'params': {key!r} is not a parameter of "
                             f"{cls.__name__} (it takes {', '.join(known) or 'none'})")
        annotation = hints.get(key, inspect.Parameter.empty)
        if not _matches(annotation, value):
            expected = getattr(annotation, "__name__", None) or str(annotation)
            raise ValueError(f"{path}: field 'params': {key!r} must be {expected}, got "
                             f"{type(value).__name__} {value!r:.60}")
    return {key: tuple(value) if isinstance(value, list) and _is_tuple(hints.get(key)) else value
            for key, value in params.items()}


def _is_tuple(annotation) -> bool:
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    return any((typing.get_origin(option) or option) is tuple
               for option in (typing.get_args(annotation) if union else (annotation,)))


def registered_class(path, field: str, name, accepts: typing.Callable[[type], bool],
                     kind: str) -> type:
    """The class registered as ``name`` when ``accepts`` it; nothing outside the registry is
    ever imported."""
    if not isinstance(name, str) or name not in METHODS:
        raise refuse(path, field, "a registered method name", name)
    cls = resolve_method(name)
    if not accepts(cls):
        raise refuse(path, field, kind, name)
    return cls


def _plain(value):
    """``value`` as JSON data: tuples as lists, numpy scalars as Python numbers."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


# --------------------------------------------------------------------------- the contract


@dataclass(frozen=True)
class ModelContract:
    """What a saved model expects of its inputs and what it was trained on (plain data).

    Images are ``stamp_shape`` = (bands, H, W) cutouts, bands in ``bands`` order, at
    ``pixel_scale`` arcsec/pixel, sky-subtracted, in ``units`` (nanomaggies: AB zero point
    ``zero_point``), with ``preprocessing`` done first. Photo-z models take no stamps
    (``stamp_shape`` None, ``pixel_scale`` None): their inputs are the catalogue ``columns``
    (the magnitudes then the errors of ``bands``, in AB magnitudes) after the cleaning recorded
    there. Modeling regressors predict ``targets`` (in that order); ``target_ranges`` holds each
    target's [min, max] over the training set (empty for models saved before stop 47)."""

    kind: str
    method: str
    params: dict
    bands: tuple[str, ...]
    pixel_scale: float | None
    stamp_shape: tuple[int, int, int] | None
    units: str
    zero_point: float = NANOMAGGY_ZERO_POINT
    preprocessing: dict = field(default_factory=dict)
    targets: tuple[str, ...] = ()
    target_ranges: dict = field(default_factory=dict)
    columns: dict = field(default_factory=dict)
    task: str = ""
    task_version: int | None = None
    split_hashes: dict = field(default_factory=dict)
    lensbench_version: str = ""
    git_commit: str | None = None
    created: str = ""

    def to_json(self) -> str:
        return json.dumps(_plain(asdict(self)), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, path="contract.json") -> ModelContract:
        """The contract in ``text``, every field type-checked (``path`` names it in errors)."""
        try:
            data = json.loads(text)
        except ValueError as error:
            raise ValueError(f"{path}: contract.json is not JSON: {error}") from None
        if not isinstance(data, dict):
            raise refuse(path, "contract", "a JSON object", data)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{path}: contract field {unknown[0]!r} is not a contract field "
                             f"(known: {', '.join(sorted(known))})")
        checks = {
            "kind": (lambda v: isinstance(v, str) and v, "a task kind (str)"),
            "method": (lambda v: v in METHODS, "a registered method name"),
            "params": (lambda v: isinstance(v, dict) and is_plain(v), "a dict of plain values"),
            "bands": (lambda v: isinstance(v, list) and all(isinstance(b, str) for b in v),
                      "a list of band names"),
            "pixel_scale": (lambda v: v is None or (_number(v) and v > 0),
                            "a positive number (arcsec/pixel) or null"),
            "stamp_shape": (lambda v: v is None or (
                isinstance(v, list) and len(v) == 3
                and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in v)),
                "3 positive ints (bands, height, width) or null"),
            "units": (lambda v: isinstance(v, str), "a str"),
            "zero_point": (_number, "a finite number"),
            "preprocessing": (lambda v: isinstance(v, dict) and is_plain(v), "a dict"),
            "targets": (lambda v: isinstance(v, list) and all(isinstance(t, str) for t in v),
                        "a list of target names"),
            "target_ranges": (lambda v: isinstance(v, dict) and all(
                isinstance(r, list) and len(r) == 2 and all(map(_number, r)) and r[0] <= r[1]
                for r in v.values()), "a dict of target -> [min, max]"),
            "columns": (lambda v: isinstance(v, dict) and is_plain(v), "a dict"),
            "task": (lambda v: isinstance(v, str), "a str"),
            "task_version": (lambda v: v is None or (isinstance(v, int)
                                                      and not isinstance(v, bool)),
                             "an int or null"),
            "split_hashes": (lambda v: isinstance(v, dict) and all(
                isinstance(h, str) for h in v.values()), "a dict of str"),
            "lensbench_version": (lambda v: isinstance(v, str), "a str"),
            "git_commit": (lambda v: v is None or isinstance(v, str), "a str or null"),
            "created": (lambda v: isinstance(v, str), "a str"),
        }
        required = ("kind", "method", "params", "bands", "pixel_scale", "stamp_shape", "units")
        for name, (ok, expected) in checks.items():
            if name not in data:
                if name in required:
                    raise refuse(path, name, expected)
                continue
            if not ok(data[name]):
                raise refuse(path, name, expected, data[name])
        if data["stamp_shape"] is not None and data["stamp_shape"][0] != len(data["bands"]):
            raise refuse(path, "stamp_shape", f"{len(data['bands'])} bands first, as 'bands' "
                         f"lists", data["stamp_shape"])
        values = dict(data)
        values["bands"] = tuple(data["bands"])
        values["targets"] = tuple(data.get("targets", ()))
        if data["stamp_shape"] is not None:
            values["stamp_shape"] = tuple(data["stamp_shape"])
        return cls(**values)


def _number(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def make_contract(method, info, *, task_version: int | None = None,
                  split_hashes: dict | None = None, preprocessing: dict | None = None,
                  columns: dict | None = None, target_ranges: dict | None = None,
                  git_commit: str | None = None,
                  lensbench_version: str | None = None) -> ModelContract:
    """The contract of ``method`` fitted on a task described by ``info`` (a TaskInfo)."""
    name = registered_name(type(method))
    if name is None:
        raise TypeError(f"{type(method).__name__} is not a registered method: a model file "
                        f"names its method by its registered name")
    catalogue = getattr(method, "inputs", None) == "catalogue" or info.kind == "photoz"
    if lensbench_version is None:
        from importlib import metadata

        try:
            lensbench_version = metadata.version("lensbench")
        except metadata.PackageNotFoundError:
            lensbench_version = "unknown"
    return ModelContract(
        kind=info.kind, method=name, params=_plain(method.get_params()),
        bands=tuple(info.bands),
        pixel_scale=None if catalogue else float(info.pixel_scale),
        stamp_shape=None if catalogue else tuple(int(s) for s in info.image_shape),
        units="AB magnitudes" if catalogue else NANOMAGGY_UNITS,
        preprocessing=_plain(preprocessing or {}), targets=tuple(info.targets),
        target_ranges=_plain(target_ranges or {}),
        columns=_plain(columns or {}), task=info.name, task_version=task_version,
        split_hashes=dict(split_hashes or {}), lensbench_version=lensbench_version,
        git_commit=git_commit, created=datetime.now(UTC).isoformat(timespec="seconds"))


# --------------------------------------------------------------------------- save / load


def family_of(cls: type) -> str | None:
    """The persistence family a method class declares (``persistence``; default "state")."""
    return getattr(cls, "persistence", "state")


def save_model(method, path, contract: ModelContract | None = None) -> Path:
    """Write the fitted ``method`` and its ``contract`` to ``path`` (one zip archive, written to
    a temporary file and renamed: an interrupted save leaves no truncated model). Returns the
    path. TypeError for a method that has nothing to save (``persistence = None``)."""
    path = Path(path)
    if contract is not None and contract.method != registered_name(type(method)):
        raise ValueError(f"contract names method {contract.method!r}, the model is "
                         f"{registered_name(type(method))!r}")
    blob = _archive(method, contract)
    with atomic_open(path, "wb") as out:
        out.write(blob)
    return path


def load_model(path, data: bytes | None = None, device: str | None = None):
    """``(method, contract)`` from the model file ``path`` (or its bytes ``data``), every part
    checked (see the module docstring). The contract is None for an archive without one (a
    method nested in another). ``device``: where a torch model (and any nested in it) scores
    (:func:`placed_params`)."""
    path = Path(path)
    if data is None:
        data = path.read_bytes()
    try:
        return _read_archive(str(path), data, device=device)
    except RecursionError:  # JSON or archives nested past any model's depth
        raise ValueError(f"{path}: not a lensbench model file: nested too deeply") from None


def placed_params(cls: type, params: dict, device: str | None = None) -> dict:
    """``params`` of a ``cls`` read from a file, with ``device`` when ``cls`` takes one (the
    torch methods): where a model scores is the loader's choice, not the trainer's. ``None``
    keeps the stored device where torch can use it; a CUDA device it cannot (a model trained
    on a GPU, loaded on a CPU-only machine) becomes "auto", the CPU there."""
    if "device" not in inspect.signature(cls.__init__).parameters:
        return params
    if device is None:
        if not str(params.get("device", "")).startswith("cuda"):
            return params
        import torch

        if torch.cuda.is_available():
            return params
        device = "auto"
    return {**params, "device": device}


def _archive(method, contract: ModelContract | None) -> bytes:
    cls = type(method)
    name = registered_name(cls)
    if name is None:
        raise TypeError(f"{cls.__name__} is not a registered method: a model file names its "
                        f"method by its registered name")
    family = family_of(cls)
    if family is None:
        raise TypeError(f"{name} has nothing to save: {cls.__name__} declares persistence None")
    files: dict[str, bytes] = {}
    if family == "net-finder":
        from lensbench.deep.checkpoint import save_checkpoint

        files["checkpoint.pt"] = _via_file(lambda p: save_checkpoint(method, p), ".pt")
    elif family == "net-regressor":
        files["checkpoint.pt"] = _via_file(method.save, ".pt")
    elif family == "state":
        writer = _StateWriter(files)
        files["state.json"] = json.dumps(writer.encode(fitted_state(method), "state"),
                                          sort_keys=True).encode()
        writer.finish()
    else:
        raise TypeError(f"{cls.__name__}.persistence is {family!r}, not one of {FAMILIES}")
    manifest = {"format": FORMAT, "method": name, "params": _plain(method.get_params()),
                "family": family}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("manifest.json", json.dumps(manifest, indent=1, sort_keys=True))
        if contract is not None:
            archive.writestr("contract.json", contract.to_json())
        for member, content in sorted(files.items()):
            archive.writestr(member, content)
    return buffer.getvalue()


def _via_file(write, suffix: str) -> bytes:
    """The bytes ``write(path)`` puts in a temporary file (for writers that take a path)."""
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / f"payload{suffix}"
        write(target)
        return target.read_bytes()


def _read_archive(path: str, data: bytes, depth: int = 0, device: str | None = None,
                  budget: list[int] | None = None):
    """(method, contract) of the archive ``data``. ``budget``: the bytes the whole model file
    may still inflate to, shared with the archives nested in it (each archive's ratio alone
    multiplies through the nesting: a 6 kB file inflated to 1 GB)."""
    if budget is None:
        budget = [MAX_RATIO * len(data) + 2**20]
    if depth > MAX_NESTING:
        raise ValueError(f"{path}: methods nested more than {MAX_NESTING} deep")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = {info.filename: info for info in archive.infolist()}
    except zipfile.BadZipFile:
        raise ValueError(f"{path}: not a lensbench model file (a zip archive holding "
                         f"manifest.json and contract.json)") from None
    for info in members.values():  # a decompression bomb is refused before it is inflated
        if info.file_size > MAX_RATIO * max(info.compress_size, 1) + 2**20:
            raise ValueError(f"{path}: {info.filename} claims {info.file_size} bytes from "
                             f"{info.compress_size}: not a model file")
    claimed = sum(info.file_size for info in members.values())
    if claimed > budget[0]:
        raise ValueError(f"{path}: its members claim {claimed} bytes, more than the "
                         f"{budget[0]} left of {MAX_RATIO} times the model file's size "
                         f"(nested archives included): not a model file")
    budget[0] -= claimed
    with archive:
        def read(member: str) -> bytes:
            if member not in members:
                raise ValueError(f"{path}: the archive has no {member}")
            return archive.read(member)

        try:
            manifest = json.loads(read("manifest.json"))
        except ValueError as error:
            raise ValueError(f"{path}: manifest.json: {error}") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise refuse(path, "format", f"{FORMAT!r}",
                         manifest.get("format", _MISSING) if isinstance(manifest, dict)
                         else manifest)
        family = manifest.get("family", _MISSING)
        cls = registered_class(path, "method", manifest.get("method", _MISSING),
                               lambda found: family_of(found) == family,
                               f"a method saved as {family!r}")
        params = placed_params(cls, checked_params(path, cls, manifest.get("params")), device)
        contract = None
        if "contract.json" in members:
            contract = ModelContract.from_json(
                read("contract.json").decode("utf-8", errors="replace"), path)
            if contract.method != manifest["method"]:
                raise refuse(path, "contract.method", f"the manifest's {manifest['method']!r}",
                             contract.method)
        if family == "net-finder":
            from lensbench.deep.checkpoint import load_checkpoint

            method = load_checkpoint(path, data=read("checkpoint.pt"), device=device)
        elif family == "net-regressor":
            method = cls.load(path, data=read("checkpoint.pt"), device=device)
        else:
            try:
                tree = json.loads(read("state.json"))
            except ValueError as error:
                raise ValueError(f"{path}: state.json: {error}") from None
            reader = _StateReader(path, read, members, depth, device, budget)
            state = reader.decode(tree, "state")
            if not isinstance(state, dict):
                raise refuse(path, "state", "a dict of fitted attributes", state)
            method = cls(**params)
            restore_fitted_state(method, state, path)
        if type(method) is not cls or method.get_params() != cls(**params).get_params():
            raise ValueError(f"{path}: the payload is not the {manifest['method']} with the "
                             f"parameters the manifest names")
        return method, contract


# --------------------------------------------------------------------------- the "state" family


def _is_fitted_name(key: str) -> bool:
    """scikit-learn's convention, which the method contract keeps: what fit learns ends in _."""
    return key.endswith("_") and not key.startswith("_")


def fitted_state(method) -> dict:
    """What ``fit`` learned: the method's attributes ending in ``_``."""
    return {key: value for key, value in vars(method).items() if _is_fitted_name(key)}


def restore_fitted_state(method, state: dict, path="model") -> None:
    for key, value in state.items():
        if not _is_fitted_name(key):  # nothing else is set: a method's own names stay its own
            raise refuse(path, f"state.{key}", "a fitted attribute (a name ending in _)", key)
        setattr(method, key, value)
    # a method whose state holds settings (not only numbers) checks them now, naming the file
    check = getattr(method, "check_restored_state", None)
    if check is not None:
        check(path)


def _full_name(obj) -> str:
    cls = type(obj)
    return f"{cls.__module__}:{cls.__qualname__}"


class _StateWriter:
    """Encodes a fitted-state tree as JSON nodes, collecting the binary leaves in ``files``."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.arrays: dict[str, np.ndarray] = {}

    def _name(self, prefix: str, suffix: str) -> str:
        return f"{prefix}/{len([f for f in self.files if f.startswith(prefix + '/')])}{suffix}"

    def encode(self, value, where: str):
        if isinstance(value, _SCALARS):
            if isinstance(value, float) and not math.isfinite(value):
                return {"$": "float", "value": repr(value)}
            return value
        if isinstance(value, (list, tuple)):
            return {"$": type(value).__name__,
                    "items": [self.encode(v, f"{where}[{i}]") for i, v in enumerate(value)]}
        if isinstance(value, dict):
            if not all(isinstance(k, str) for k in value):
                raise TypeError(f"{where}: dict keys must be str to be saved")
            return {"$": "dict", "items": {k: self.encode(v, f"{where}.{k}")
                                           for k, v in value.items()}}
        if isinstance(value, (np.ndarray, np.generic)):
            array = np.asarray(value)
            if array.dtype.hasobject:
                raise TypeError(f"{where}: object arrays cannot be saved")
            key = f"a{len(self.arrays)}"
            self.arrays[key] = array
            return {"$": "array" if isinstance(value, np.ndarray) else "numpy-scalar",
                    "key": key}
        name = _full_name(value)
        if registered_name(type(value)) is not None:  # a nested method (TwoStep's steps)
            member = self._name("nested", SUFFIX)
            self.files[member] = _archive(value, None)
            return {"$": "method", "file": member}
        if name in _OBJECT_NAMES:
            return {"$": "object", "class": _OBJECT_NAMES[name],
                    "state": self.encode(dict(vars(value)), where)}
        module = type(value).__module__
        if module.startswith("xgboost.") and type(value).__name__ in _XGBOOST_CLASSES:
            member = self._name("xgboost", ".json")
            self.files[member] = _via_file(value.save_model, ".json")
            return {"$": "xgboost", "class": type(value).__name__, "file": member}
        if module.startswith("sklearn."):
            import skops.io

            member = self._name("sklearn", ".skops")
            self.files[member] = skops.io.dumps(value)
            return {"$": "sklearn", "file": member}
        spec = getattr(value, "build_spec", None)
        if module.startswith("torch") or spec is not None:
            return self._module(value, spec, where)
        raise TypeError(f"{where}: cannot save a {name} (not plain data, a numpy array, a "
                        f"scikit-learn, xgboost or torch model, nor a registered method)")

    def _module(self, module, spec, where: str):
        import torch

        if not isinstance(module, torch.nn.Module) or not isinstance(spec, dict) \
                or spec.get("builder") not in _BUILDERS or not is_plain(spec.get("kwargs")):
            raise TypeError(f"{where}: a torch {type(module).__name__} without a build_spec "
                            f"naming one of {', '.join(_BUILDERS)}: cannot rebuild it")
        member = self._name("torch", ".pt")
        buffer = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in module.state_dict().items()}, buffer)
        self.files[member] = buffer.getvalue()
        return {"$": "torch", "builder": spec["builder"], "kwargs": _plain(spec["kwargs"]),
                "training": bool(module.training), "file": member}

    def finish(self) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, **self.arrays)
        self.files["arrays.npz"] = buffer.getvalue()


class _StateReader:
    """Decodes the JSON nodes of ``_StateWriter``, checking every one."""

    def __init__(self, path: str, read, members, depth: int = 0, device: str | None = None,
                 budget: list[int] | None = None):
        self.path, self.read, self.members, self.depth = path, read, members, depth
        self.budget = budget
        self.device = device
        self._arrays = None

    def arrays(self):
        if self._arrays is None:
            try:
                self._arrays = np.load(io.BytesIO(self.read("arrays.npz")), allow_pickle=False)
                self._arrays.files  # noqa: B018 - reads the index: a bad archive fails here
            except (ValueError, OSError, zipfile.BadZipFile) as error:
                raise ValueError(f"{self.path}: arrays.npz: not numpy arrays without pickled "
                                 f"objects: {error}") from None
        return self._arrays

    def _check_declared_size(self, key: str) -> None:
        """ValueError if the header of array ``key`` declares more bytes than the archive
        holds for it: numpy allocates the declared array before reading it, so a few hundred
        bytes could otherwise claim terabytes."""
        from numpy.lib import format as npy

        archive = self.arrays().zip
        info = archive.getinfo(f"{key}.npy")
        try:
            with archive.open(info) as f:
                version = npy.read_magic(f)
                read_header = (npy.read_array_header_1_0 if version == (1, 0)
                               else npy.read_array_header_2_0)
                shape, _, dtype = read_header(f)
                held = info.file_size - f.tell()
        except (ValueError, OSError) as error:
            raise ValueError(f"{self.path}: arrays.npz: {key}: not a numpy array: {error}"
                             ) from None
        declared = math.prod(shape) * dtype.itemsize
        if declared > held:
            raise ValueError(f"{self.path}: arrays.npz: {key}: its header declares {shape} "
                             f"{dtype} ({declared} bytes), the archive holds {held}")

    def decode(self, node, where: str):
        if isinstance(node, _SCALARS):
            return node
        if not isinstance(node, dict) or not isinstance(node.get("$"), str):
            raise refuse(self.path, where, "a value node of state.json", node)
        tag = node["$"]
        if tag in ("list", "tuple"):
            items = node.get("items")
            if not isinstance(items, list):
                raise refuse(self.path, where, "a list of items", items)
            values = [self.decode(v, f"{where}[{i}]") for i, v in enumerate(items)]
            return values if tag == "list" else tuple(values)
        if tag == "dict":
            items = node.get("items")
            if not isinstance(items, dict):
                raise refuse(self.path, where, "a dict of items", items)
            return {k: self.decode(v, f"{where}.{k}") for k, v in items.items()}
        if tag == "float":
            if node.get("value") not in ("nan", "inf", "-inf"):
                raise refuse(self.path, where, "'nan', 'inf' or '-inf'", node.get("value"))
            return float(node["value"])
        if tag in ("array", "numpy-scalar"):
            key = node.get("key")
            if not isinstance(key, str) or key not in self.arrays().files:
                raise refuse(self.path, where, "the key of an array in arrays.npz", key)
            self._check_declared_size(key)
            try:
                array = self.arrays()[key]
            except ValueError as error:  # an object array: numpy refuses to unpickle it
                raise ValueError(f"{self.path}: arrays.npz: {key}: {error}") from None
            return array if tag == "array" else array[()]
        if tag == "object":
            if node.get("class") not in _OBJECTS:
                raise refuse(self.path, where, f"one of {', '.join(_OBJECTS)}",
                             node.get("class"))
            module, name = _OBJECTS[node["class"]].split(":")
            import importlib

            cls = getattr(importlib.import_module(module), name)
            state = self.decode(node.get("state"), where)
            # a dataclass's fields; another class's instance attributes, none of which may
            # shadow what the class defines (a file setting ``transform`` on PhotozFeatures)
            allowed = {f.name for f in fields(cls)} if hasattr(cls, "__dataclass_fields__") \
                else None
            if not isinstance(state, dict) or (set(state) - allowed if allowed is not None
                                               else any(hasattr(cls, key) for key in state)):
                raise refuse(self.path, where, f"the attributes of a {name}", state)
            obj = cls.__new__(cls)
            obj.__dict__.update(state)  # no __init__ or __setstate__ runs
            return obj
        if tag == "method":
            member = self._member(node, where, "nested/")
            return _read_archive(f"{self.path}:{member}", self.read(member),
                                 self.depth + 1, self.device, self.budget)[0]
        if tag == "xgboost":
            if node.get("class") not in _XGBOOST_CLASSES:
                raise refuse(self.path, where, f"one of {_XGBOOST_CLASSES}", node.get("class"))
            import xgboost

            model = getattr(xgboost, node["class"])()
            blob = self.read(self._member(node, where, "xgboost/"))
            try:
                model.load_model(bytearray(blob))
            except Exception as error:  # xgboost's parser: a bad file is refused, never run
                raise ValueError(f"{self.path}: {where}: not an xgboost JSON model: "
                                 f"{str(error).splitlines()[0] if str(error) else error!r}"
                                 ) from None
            return model
        if tag == "sklearn":
            import skops.io

            blob = self.read(self._member(node, where, "sklearn/"))
            trusted = _skops_trusted(self.path, where, blob)
            try:
                return skops.io.loads(blob, trusted=trusted)
            except Exception as error:  # skops' parser: a malformed file is refused, never run
                raise ValueError(f"{self.path}: {where}: not a readable skops file: "
                                 f"{type(error).__name__}: {error}") from None
        if tag == "torch":
            return self._module(node, where)
        raise refuse(self.path, where, "a known value tag", tag)

    def _member(self, node, where: str, prefix: str) -> str:
        member = node.get("file")
        if not isinstance(member, str) or not member.startswith(prefix) \
                or member not in self.members:
            raise refuse(self.path, where, f"a file of the archive under {prefix}", member)
        return member

    def _module(self, node, where: str):
        import importlib

        from lensbench.deep.checkpoint import build_members, read_payload, state_dicts

        builder, kwargs = node.get("builder"), node.get("kwargs")
        if builder not in _BUILDERS:
            raise refuse(self.path, where, f"a builder, one of {', '.join(_BUILDERS)}", builder)
        if not isinstance(kwargs, dict) or not is_plain(kwargs):
            raise refuse(self.path, where, "plain keyword arguments", kwargs)
        module, name = _BUILDERS[builder].split(":")
        build = getattr(importlib.import_module(module), name)
        state = read_payload(f"{self.path}:{node.get('file')}", "torch state dict",
                             self.read(self._member(node, where, "torch/")))
        state = state_dicts(self.path, where, [state], 1)[0]
        net = build_members(self.path, [kwargs], [state], build=build)[0]
        return net.train(bool(node.get("training", False)))


def _skops_trusted(path: str, where: str, blob: bytes) -> list[str]:
    """The types the skops file ``blob`` needs beyond skops' trusted defaults, each one of
    ``_SKOPS_TYPES``; anything else is refused before anything is built."""
    import skops.io

    try:
        needed = skops.io.get_untrusted_types(data=blob)
    except Exception as error:  # skops' parser: a malformed file is refused
        raise ValueError(f"{path}: {where}: not a readable skops file: "
                         f"{type(error).__name__}: {error}") from None
    for name in needed:
        if name not in _SKOPS_TYPES:
            raise ValueError(f"{path}: {where}: the scikit-learn file needs the type {name!r}, "
                             f"which no lensbench method saves: refused")
    return needed
