"""Checkpoints of fitted CNN finders: weights plus everything needed to score again (class,
params, bands, image shape, preprocessing statistics, temperature) in one torch file holding only
plain data and tensors, so it loads with ``torch.load(weights_only=True)``."""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
from lensbench.deep.methods import NetFinder
from lensbench.deep.nets import build_net
from lensbench.deep.preprocess import Preprocessor

FORMAT = "lensbench-deep-checkpoint/1"


def _class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def architecture(net_configs: list[dict]) -> str:
    """A readable description of the member networks, e.g. ``resnet(width=16,depth=1)``."""
    parts = []
    for config in net_configs:
        kwargs = ",".join(f"{k}={v}" for k, v in config.items() if k not in ("arch",
                                                                             "in_channels"))
        parts.append(f"{config['arch']}({kwargs})")
    return " + ".join(parts)


def save_checkpoint(method: NetFinder, path) -> Path:
    """Write a fitted :class:`NetFinder` to ``path`` (parents created); returns the path."""
    if not isinstance(method, NetFinder):
        raise TypeError(f"checkpoints hold CNN finders (NetFinder), not {type(method).__name__}")
    if not hasattr(method, "nets_"):
        raise ValueError(f"{type(method).__name__} is not fitted: nothing to save")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "class": _class_path(type(method)),
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
        "calibration": {k: float(getattr(method, k)) for k in
                        ("ece_before_", "ece_after_", "nll_before_", "nll_after_")
                        if hasattr(method, k)},
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(path, expected_bands=None, expected_architecture: str | None = None
                    ) -> NetFinder:
    """The fitted method stored at ``path``.

    ``expected_bands`` (a sequence of band names) and ``expected_architecture`` (an architecture
    name such as ``"resnet"`` or a full description as :func:`architecture` writes it) must match
    the checkpoint, else ValueError naming the file and the mismatch."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:
        raise ValueError(f"{path}: not a readable lensbench checkpoint ({error})") from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path}: not a lensbench deep checkpoint (format "
                         f"{payload.get('format') if isinstance(payload, dict) else None!r}, "
                         f"expected {FORMAT!r})")
    if expected_bands is not None and list(expected_bands) != list(payload["bands"]):
        raise ValueError(f"{path}: checkpoint was trained on bands {payload['bands']}, "
                         f"expected {list(expected_bands)}")
    arch = payload["architecture"]
    if expected_architecture is not None:
        names = {config["arch"] for config in payload["net_configs"]}
        if expected_architecture != arch and {expected_architecture} != names:
            raise ValueError(f"{path}: checkpoint architecture is {arch!r}, expected "
                             f"{expected_architecture!r}")
    module_name, class_name = payload["class"].split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    method = cls(**payload["params"])
    method.bands_ = tuple(payload["bands"])
    method.image_shape_ = tuple(payload["image_shape"])
    method.preprocessor_ = Preprocessor(**payload["preprocessing"])
    method.net_configs_ = payload["net_configs"]
    method.nets_ = []
    for i, (config, weights) in enumerate(zip(method.net_configs_, payload["weights"],
                                              strict=True)):
        net = build_net(**config)
        try:
            net.load_state_dict(weights)
        except RuntimeError as error:
            raise ValueError(f"{path}: member {i} weights do not fit {architecture([config])}: "
                             f"{str(error).splitlines()[0]}") from error
        net.eval()
        method.nets_.append(net)
    method.temperature_ = payload["temperature"]
    method.best_epochs_ = list(payload["best_epochs"])
    method.best_epoch_ = method.best_epochs_[0]
    method.ece_before_ = method.ece_after_ = float("nan")
    for key, value in payload["calibration"].items():
        setattr(method, key, value)
    method.history_ = {}
    method.checkpoint_path_ = str(path)
    return method
