"""Checkpoints of fitted CNN finders: weights plus everything needed to score again (method,
params, bands, image shape, preprocessing statistics, temperature) in one torch file holding only
plain data and tensors.

What a checkpoint is trusted to do: nothing but hold numbers. It loads with
``torch.load(weights_only=True)`` (containers, numbers, strings and tensors; no pickled objects),
the method is named by its registered name (baselines/registry.py) and must be a class of the
right kind, its ``params`` must be parameters that class takes, with values of the declared types,
and every other field is type-checked before use. Anything else is refused with a ValueError that
names the file and the field, so a checkpoint from an untrusted source can at worst give wrong
scores. The helpers here are shared with the regressor checkpoints (deep/regression.py).
"""

from __future__ import annotations

import io
import math
import re
import zipfile
from dataclasses import fields
from pathlib import Path

import torch
from lensbench.baselines.persistence import (
    _MISSING,
    checked_params,
    placed_params,
    refuse,
    registered_class,
)
from lensbench.baselines.persistence import is_plain as _is_plain
from lensbench.baselines.registry import METHODS, registered_name
from lensbench.deep.nets import NETS, build_net
from lensbench.deep.preprocess import STRETCHES, Preprocessor
from torch import nn

FORMAT = "lensbench-deep-checkpoint/2"
# Format 1 named the class as "module:Class"; such files are still read when that string is
# exactly the target of a registered method (and refused otherwise).
FORMAT_1 = "lensbench-deep-checkpoint/1"
CALIBRATION_KEYS = ("ece_before_", "ece_after_", "nll_before_", "nll_after_")


# --------------------------------------------------------------------------- shared checks
# (refuse, checked_params and registered_class live in baselines/persistence.py, below torch)


def read_payload(path, kind: str, data: bytes | None = None, hint: str = "") -> dict:
    """The dict stored in the torch file ``path`` (or in ``data``, its bytes already read),
    loaded weights-only; ``kind`` names what the file should be in the errors, ``hint`` is added
    to the error of a file that does not load weights-only."""
    try:
        payload = torch.load(io.BytesIO(data) if data is not None else path, map_location="cpu",
                             weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:
        # torch's weights-only refusal is a long text advising to trust the file; only the
        # pickled object it asked for is worth showing
        text = str(error)
        # a global outside torch's allowed set, or in a module torch blocks (os, posix, ...)
        wanted = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) (\S+)", text)
        unpickler = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
        if wanted:
            reason = f"it holds a pickled Python object ({wanted.group(1)})"
        elif not zipfile.is_zipfile(io.BytesIO(data) if data is not None else path):
            reason = "it is not a torch file (torch.save writes zip archives)"
        elif unpickler:
            reason = unpickler.group(1).strip()
        else:
            # never torch's advice to load it with weights_only=False
            lines = [line for line in text.strip().splitlines()
                     if line.strip() and "weights_only" not in line]
            reason = lines[0] if lines else type(error).__name__
        raise ValueError(f"{path}: not a {kind} that loads as weights only (plain data and "
                         f"tensors): {reason}{hint}") from None
    if not isinstance(payload, dict):
        raise ValueError(f"{path}: not a {kind} (a {type(payload).__name__}, not a dict)")
    return payload


def _finite(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _ints(value):
    """Every int in plain ``value``, nested or not."""
    if isinstance(value, int) and not isinstance(value, bool):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _ints(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _ints(item)


def names(path, field: str, value, what: str, count: int | None = None) -> tuple[str, ...]:
    """A list (or tuple) of ``count`` strings."""
    if not isinstance(value, (list, tuple)) or not value or not all(
            isinstance(v, str) for v in value):
        raise refuse(path, field, f"a list of {what} (str)", value)
    if count is not None and len(value) != count:
        raise refuse(path, field, f"{count} {what}", value)
    return tuple(value)


def image_shape(path, field: str, value, bands: int) -> tuple[int, int, int]:
    """(bands, H, W) as 3 positive ints, the first the number of bands."""
    if (not isinstance(value, (list, tuple)) or len(value) != 3
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        raise refuse(path, field, "3 positive ints (bands, height, width)", value)
    if value[0] != bands:
        raise refuse(path, field, f"{bands} bands first, as the bands field lists", value)
    return tuple(value)


def finite_numbers(path, field: str, value, count: int, positive: bool = False
                   ) -> list[float]:
    """``count`` finite numbers, from a list, a tuple or a 1-d tensor."""
    if isinstance(value, torch.Tensor) and value.ndim == 1 and value.is_floating_point():
        value = value.tolist()
    ok = (isinstance(value, (list, tuple)) and len(value) == count
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                  and (v > 0 or not positive) for v in value))
    if not ok:
        sign = "positive " if positive else ""
        raise refuse(path, field, f"{count} {sign}finite numbers", value)
    return [float(v) for v in value]


def epochs(path, field: str, value, count: int) -> list[int]:
    if (not isinstance(value, (list, tuple)) or len(value) != count
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        raise refuse(path, field, f"a list of ints, one per member ({count})", value)
    return list(value)


def preprocessor(path, field: str, value, bands: int) -> Preprocessor:
    """The fitted :class:`Preprocessor` described by ``value`` (its ``state()``)."""
    known = [f.name for f in fields(Preprocessor)]
    if not isinstance(value, dict):
        raise refuse(path, field, "a dict of Preprocessor settings", value)
    for key in value:
        if key not in known:
            raise refuse(path, field, f"only the keys {', '.join(known)} (not {key!r})", value)
    checks = {
        "stretch": (lambda v: v in STRETCHES, f"one of {STRETCHES}"),
        "softening": (lambda v: _finite(v) and v > 0, "a positive finite number"),
        "crop": (lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)
                                        and v > 0), "a positive int or None"),
        "mask_value": (lambda v: v is None or _finite(v), "a finite number or None"),
        "noise": (lambda v: isinstance(v, (list, tuple)) and all(_finite(s) and s > 0 for s in v),
                  "positive finite numbers (one sky sigma per channel)"),
        "lens_light": (lambda v: isinstance(v, bool), "true or false"),
        "lens_light_keep_image": (lambda v: isinstance(v, bool), "true or false"),
        "bands": (lambda v: v is None or (isinstance(v, (list, tuple)) and len(v) == bands
                                          and all(isinstance(b, str) for b in v)),
                  f"None or {bands} band names"),
        "pixel_scale": (lambda v: v is None or (_finite(v) and v > 0),
                        "None or a positive finite number (arcsec)"),
    }
    for key, (ok, expected) in checks.items():
        if (key in value or key == "noise") and not ok(value.get(key)):
            raise refuse(path, field, f"{key!r}: {expected}", value.get(key, _MISSING))
    settings = dict(value)
    settings["noise"] = tuple(float(s) for s in value["noise"])
    try:
        prep = Preprocessor(**settings)
    except ValueError as error:
        raise refuse(path, field, str(error), value) from None
    channels = bands * prep.channels_per_band
    if len(prep.noise) != channels:
        raise refuse(path, field, f"'noise': {channels} positive finite numbers (one sky sigma "
                     "per channel)", value["noise"])
    return prep


def net_configs(path, field: str, value, in_channels: int) -> list[dict]:
    """Member network configurations: dicts naming a known architecture of
    :func:`lensbench.deep.nets.build_net`, ``in_channels`` channels (what the preprocessing
    gives the nets) and plain keyword values."""
    if not isinstance(value, (list, tuple)) or not value:
        raise refuse(path, field, "a non-empty list of network configurations (dicts)", value)
    for i, config in enumerate(value):
        if not isinstance(config, dict) or not all(isinstance(k, str) for k in config):
            raise refuse(path, field, f"member {i}: a dict", config)
        if config.get("arch") not in NETS:
            raise refuse(path, field, f"member {i}: 'arch' a known architecture "
                         f"({', '.join(NETS)})", config.get("arch", _MISSING))
        if config.get("in_channels") != in_channels:
            raise refuse(path, field, f"member {i}: 'in_channels' {in_channels} (the "
                         "preprocessing's channels)",
                         config.get("in_channels", _MISSING))
        if not _is_plain(config):
            raise refuse(path, field, f"member {i}: plain numbers and strings", config)
    return [dict(config) for config in value]


def state_dicts(path, field: str, value, count: int) -> list[dict[str, torch.Tensor]]:
    if not isinstance(value, (list, tuple)) or len(value) != count:
        raise refuse(path, field, f"a list of {count} weight dicts, one per net config", value)
    for i, state in enumerate(value):
        if not isinstance(state, dict) or not all(
                isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
            raise refuse(path, field, f"member {i}: a dict of tensors", state)
    return list(value)


def build_members(path, configs: list[dict], weights: list[dict], build=build_net
                  ) -> list[nn.Module]:
    """The member networks ``build(**config)`` with their weights, in eval mode. A
    configuration claiming a far larger network than the file holds allocates nothing and takes
    no time: every size in it (a width, depth, stage count or output count of these
    architectures needs at least that many weights) must be at most the number of stored
    weights, and it is first built on the meta device (shapes only, no memory) to compare its
    parameter shapes with the stored ones."""
    nets = []
    for i, (config, state) in enumerate(zip(configs, weights, strict=True)):
        stored_weights = sum(tensor.numel() for tensor in state.values())
        if any(size > stored_weights for size in _ints(config)):
            raise ValueError(f"{path}: member {i} weights do not fit {architecture([config])}: "
                             f"a size in it exceeds the {stored_weights} stored weights")
        try:
            with torch.device("meta"):
                skeleton = build(**config)
        except Exception as error:  # any failure to build a plain configuration: it does not fit
            raise ValueError(f"{path}: field 'net_configs': member {i} {config} does not fit "
                             f"{config.get('arch', build.__name__)}: {error}") from None
        needed = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
        stored = {k: tuple(v.shape) for k, v in state.items()}
        if needed != stored:
            problem = next((f"{k} has shape {stored.get(k)}, the network needs {needed[k]}"
                            for k in needed if stored.get(k) != needed[k]), None) or (
                f"unexpected tensors {sorted(set(stored) - set(needed))[:3]}")
            raise ValueError(f"{path}: member {i} weights do not fit "
                             f"{architecture([config])}: {problem}")
        net = build(**config)
        net.load_state_dict(state)
        nets.append(net.eval())
    return nets


# --------------------------------------------------------------------------- CNN finders


def architecture(net_configs: list[dict]) -> str:
    """A readable description of the member networks, e.g. ``resnet(width=16,depth=1)``."""
    parts = []
    for config in net_configs:
        kwargs = ",".join(f"{k}={v}" for k, v in config.items() if k not in ("arch",
                                                                             "in_channels"))
        parts.append(f"{config.get('arch', 'net')}({kwargs})")
    return " + ".join(parts)


def _is_cnn_finder(cls: type) -> bool:
    # NetFinder (deep/methods.py) declares the format; checked by attribute because methods.py
    # imports this module (a CNN finder saves its checkpoint when it is fitted).
    return getattr(cls, "checkpoint_format", None) == FORMAT


def save_checkpoint(method, path) -> Path:
    """Write a fitted CNN finder (a registered NetFinder) to ``path`` (parents created);
    returns the path."""
    name = registered_name(type(method))
    if name is None or not _is_cnn_finder(type(method)):
        raise TypeError(f"checkpoints hold registered CNN finders (NetFinder), not "
                        f"{type(method).__name__}")
    if not hasattr(method, "nets_"):
        raise ValueError(f"{type(method).__name__} is not fitted: nothing to save")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "method": name,
        "params": method.get_params(),
        "architecture": architecture(method.net_configs_),
        "bands": list(method.bands_),
        "image_shape": list(method.image_shape_),
        "preprocessing": method.preprocessor_.state(),
        "net_configs": method.net_configs_,
        "weights": [{k: v.detach().cpu() for k, v in net.state_dict().items()}
                    for net in method.nets_],
        "temperature": float(method.temperature_),
        "best_epochs": list(method.best_epochs_),
        "calibration": {k: float(getattr(method, k)) for k in CALIBRATION_KEYS
                        if hasattr(method, k)},
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(path, expected_bands=None, expected_architecture: str | None = None, *,
                    data: bytes | None = None, device: str | None = None):
    """The fitted CNN finder stored at ``path``, every field checked (see the module docstring).
    ``data``: the file's bytes when the caller has read them already (``path`` then only names
    the file, in errors and as ``checkpoint_path_``).

    ``expected_bands`` (a sequence of band names) and ``expected_architecture`` (an architecture
    name such as ``"resnet"`` or a full description as :func:`architecture` writes it) must match
    the checkpoint, else ValueError naming the file and the mismatch. ``device``: where the
    finder scores (baselines.persistence.placed_params: by default the stored device where
    torch can use it, else "auto")."""
    path = Path(path)
    payload = read_payload(path, "lensbench deep checkpoint", data)
    version = payload.get("format")
    if version == FORMAT:
        field, name = "method", payload.get("method", _MISSING)
    elif version == FORMAT_1:
        field, class_path = "class", payload.get("class", _MISSING)
        name = {target: name for name, target in METHODS.items()}.get(class_path)
        if name is None:
            raise refuse(path, field, "the 'module:Class' of a registered method", class_path)
    else:
        raise ValueError(f"{path}: not a lensbench deep checkpoint (format {version!r}, "
                         f"expected {FORMAT!r})")
    cls = registered_class(path, field, name, _is_cnn_finder, "a CNN lens finder (NetFinder)")
    params = placed_params(cls, checked_params(path, cls, payload.get("params")), device)
    bands = names(path, "bands", payload.get("bands", _MISSING), "band names")
    shape = image_shape(path, "image_shape", payload.get("image_shape", _MISSING), len(bands))
    prep = preprocessor(path, "preprocessing", payload.get("preprocessing", _MISSING),
                        len(bands))
    configs = net_configs(path, "net_configs", payload.get("net_configs", _MISSING),
                          len(bands) * prep.channels_per_band)
    weights = state_dicts(path, "weights", payload.get("weights", _MISSING), len(configs))
    temperature = payload.get("temperature", _MISSING)
    if not _finite(temperature) or temperature <= 0:
        raise refuse(path, "temperature", "a positive finite number", temperature)
    best = epochs(path, "best_epochs", payload.get("best_epochs", _MISSING), len(configs))
    calibration = payload.get("calibration", {})
    if not isinstance(calibration, dict) or not all(
            k in CALIBRATION_KEYS and isinstance(v, (int, float)) and not isinstance(v, bool)
            for k, v in calibration.items()):
        raise refuse(path, "calibration", f"a dict of numbers under the keys "
                     f"{', '.join(CALIBRATION_KEYS)}", calibration)

    if expected_bands is not None and list(expected_bands) != list(bands):
        raise ValueError(f"{path}: checkpoint was trained on bands {list(bands)}, "
                         f"expected {list(expected_bands)}")
    arch = architecture(configs)
    if expected_architecture is not None:
        archs = {config["arch"] for config in configs}
        if expected_architecture != arch and {expected_architecture} != archs:
            raise ValueError(f"{path}: checkpoint architecture is {arch!r}, expected "
                             f"{expected_architecture!r}")
    nets = build_members(path, configs, weights)

    method = cls(**params)
    method.bands_ = bands
    method.image_shape_ = shape
    method.preprocessor_ = prep
    method.net_configs_ = configs
    method.nets_ = nets
    method.temperature_ = float(temperature)
    method.best_epochs_ = best
    method.best_epoch_ = best[0]
    method.ece_before_ = method.ece_after_ = float("nan")
    for key, value in calibration.items():
        setattr(method, key, float(value))
    method.history_ = {}
    method.checkpoint_path_ = str(path)
    return method
