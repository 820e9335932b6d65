"""One training loop for every network (classifiers and the autoencoder).

:func:`train_net` runs AdamW (or Adam) with a cosine or step schedule over mini-batches of
augmented, stretched images, evaluates an internal validation split after every epoch, calls
``epoch_callback(epoch, metrics)`` (exceptions propagate: Optuna prunes this way), stops early
after ``patience`` epochs without improvement and restores the best epoch's weights.

Determinism: :func:`deterministic` seeds torch inside a forked RNG (the global RNG is restored
afterwards), turns on deterministic algorithms and sets the thread count only for the duration.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from lensbench.deep.preprocess import Augment, Preprocessor, host_to
from lensbench.deep.progress import Progress
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from torch import nn

EpochCallback = Callable[[int, dict], None]


CHANNELS_LAST = torch.channels_last  # 1.5-8x faster convolutions on CPU (oneDNN)
PRECISIONS = ("float32", "bfloat16")
MEMORY_FORMATS = ("auto", "channels_last", "contiguous")
# The training set moves to a CUDA device once, before the first epoch, when it takes at most
# this share of the device's free memory (the network, its activations and the optimizer need
# the rest); otherwise each batch travels from pinned host memory.
DEVICE_DATA_SHARE = 0.5


# torch 2.13's CPU build corrupts memory (double free, "free(): invalid next size", segfault)
# in the deterministic backward pass of a channels-last network whose narrowest convolution has
# fewer than 16 output channels, on 2 threads: build_net("resnet", 3, width=8, 10, 12, 13 or 14)
# trained on 32x32 batches of 16, 3, 1, 7 and 2 crashed, width 16 and 20 never did, nor any
# width in the contiguous format or on one thread (gdb, in the design study: oneDNN's avx512 1x1
# convolution backward-weights in a GOMP parallel region). Channels-last is worth keeping where
# it is safe: 4 epochs of 512 4x64x64 cutouts in batches of 64, 2 threads, deterministic, took
# 0.37 s an epoch (width 16) and 1.08 s (width 32) against 0.48 s and 1.31 s contiguous.
CHANNELS_LAST_MIN_CHANNELS = 16


def narrowest_convolution(net: nn.Module) -> int | None:
    """The fewest output channels of any convolution of ``net`` (None: it has none)."""
    return min((m.out_channels for m in net.modules() if isinstance(m, nn.Conv2d)), default=None)


def memory_format_for(device: torch.device, memory_format: str = "auto",
                      net: nn.Module | None = None, training: bool = False
                      ) -> torch.memory_format:
    """"auto": channels-last on the CPU (measured there, see CHANNELS_LAST), contiguous on other
    devices until channels-last is measured on one, and on the CPU for a ``net`` narrower than
    CHANNELS_LAST_MIN_CHANNELS (which crashes torch there); or the format named, except
    channels-last for ``training`` such a net on the CPU, a ValueError."""
    if memory_format not in MEMORY_FORMATS:
        raise ValueError(f"memory_format must be one of {MEMORY_FORMATS}, got {memory_format!r}")
    narrowest = narrowest_convolution(net) if net is not None and device.type == "cpu" else None
    unsafe = narrowest is not None and narrowest < CHANNELS_LAST_MIN_CHANNELS
    if memory_format == "auto":
        return CHANNELS_LAST if device.type == "cpu" and not unsafe else torch.contiguous_format
    if memory_format == "channels_last" and unsafe and training:
        raise ValueError(f"memory_format='channels_last' on the CPU needs convolutions of at "
                         f"least {CHANNELS_LAST_MIN_CHANNELS} channels (this network has one of "
                         f"{narrowest}: a width under {CHANNELS_LAST_MIN_CHANNELS}), else torch's "
                         "backward pass crashes the process; use memory_format='auto' or "
                         "'contiguous'")
    return CHANNELS_LAST if memory_format == "channels_last" else torch.contiguous_format


def autocast(device: torch.device, precision: str = "float32"):
    """bf16 autocast of the forward pass for precision "bfloat16" (losses and outputs stay
    float32); nothing for "float32"."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                          enabled=precision == "bfloat16")


def to_device(x: torch.Tensor, device: torch.device,
              memory_format: torch.memory_format = CHANNELS_LAST) -> torch.Tensor:
    """A batch (n, B, H, W) on ``device`` in ``memory_format`` (from the CPU to CUDA through
    pinned memory, asynchronously: host_to)."""
    return host_to(x, device).contiguous(memory_format=memory_format)


def fits_on_device(tensors: list[torch.Tensor], device: torch.device) -> bool:
    """Whether ``tensors`` take at most DEVICE_DATA_SHARE of a CUDA device's free memory."""
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return sum(t.numel() * t.element_size() for t in tensors) <= DEVICE_DATA_SHARE * free


def device_resident(X: np.ndarray, device: torch.device) -> np.ndarray | torch.Tensor:
    """``X`` as a tensor on ``device`` when it fits there (a CUDA device), else ``X`` itself:
    inputs read many times (each epoch's validation, each test-time pass of each member) then
    cross the bus once instead of every time."""
    if device.type != "cuda":
        return X
    x = torch.from_numpy(np.ascontiguousarray(X))
    return x.to(device) if fits_on_device([x], device) else X


def resolve_device(device: str = "auto") -> torch.device:
    """"auto" -> CUDA when available, else CPU; anything else is passed to torch.device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@contextlib.contextmanager
def deterministic(seed: int, num_threads: int | None = None):
    """Seeded, deterministic torch for the duration of the block; global state restored after."""
    previous_threads = torch.get_num_threads()
    previous_det = torch.are_deterministic_algorithms_enabled()
    previous_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    previous_fill = torch.utils.deterministic.fill_uninitialized_memory
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        torch.use_deterministic_algorithms(True, warn_only=True)
        # Filling new tensors with NaN (a debugging aid of deterministic mode) costs ~30%.
        torch.utils.deterministic.fill_uninitialized_memory = False
        if num_threads:
            torch.set_num_threads(int(num_threads))
        try:
            yield
        finally:
            torch.set_num_threads(previous_threads)
            torch.use_deterministic_algorithms(previous_det, warn_only=previous_warn)
            torch.utils.deterministic.fill_uninitialized_memory = previous_fill


def stratified_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices); stratified on y when every class has 2+ members.
    ``fraction`` 0 gives an empty validation set."""
    idx = np.arange(len(y))
    if fraction <= 0:
        return idx, idx[:0]
    y = np.asarray(y)
    _, counts = np.unique(y, return_counts=True)
    stratify = y if counts.min() >= 2 and len(counts) > 1 else None
    n_val = max(1, int(round(fraction * len(y))))
    if stratify is not None:
        n_val = max(n_val, len(counts))
    train_idx, val_idx = train_test_split(idx, test_size=n_val, random_state=seed,
                                          stratify=stratify)
    return np.sort(train_idx), np.sort(val_idx)


@dataclass
class TrainConfig:
    """Optimisation settings (defaults: the CPU ResNet profile)."""

    max_epochs: int = 20
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4  # 0 with optimizer="adam" is plain Adam (DeepLens)
    optimizer: str = "adamw"  # "adamw" | "adam"
    schedule: str = "cosine"  # "cosine" | "step" | "constant"
    step_every: int = 40  # step schedule: divide the learning rate by step_factor every ...
    step_factor: float = 10.0
    patience: int | None = 6  # epochs without improvement before stopping (None: never)
    monitor: str = "val_loss"  # lower is better; "val_auroc" is maximised
    augment: Augment = field(default_factory=Augment)
    device: str = "auto"
    num_threads: int | None = None
    eval_batch_size: int = 512
    precision: str = "float32"  # "bfloat16": autocast (off until measured on a GPU)
    memory_format: str = "auto"  # see memory_format_for


class Objective:
    """Binary classification: BCE on the logit. Subclasses change the loss, the metrics and, when
    augmentation changes the targets (regression of positions and orientations), ``augment``."""

    # The epoch's figures the progress line shows (None: all but the learning rate and time).
    shown: tuple[str, ...] | None = None

    def augment(self, augment: Augment, x: torch.Tensor, y: torch.Tensor,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return augment(x, generator), y

    def loss(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(net(x), y)

    def outputs(self, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return net(x)

    def val_metrics(self, outputs: torch.Tensor, x: torch.Tensor, y: np.ndarray) -> dict:
        logits = outputs.double()
        loss = F.binary_cross_entropy_with_logits(logits, torch.as_tensor(y, dtype=torch.float64))
        metrics = {"val_loss": float(loss)}
        if len(np.unique(y)) == 2:
            metrics["val_auroc"] = float(roc_auc_score(y, logits.numpy()))
        return metrics


class Reconstruction(Objective):
    """Autoencoder: mean squared reconstruction error; labels are ignored."""

    def loss(self, net, x, y):
        return F.mse_loss(net(x), x)

    def outputs(self, net, x):
        return ((net(x) - x) ** 2).mean(dim=(1, 2, 3))

    def val_metrics(self, outputs, x, y):
        return {"val_loss": float(outputs.double().mean())}


@dataclass
class TrainResult:
    best_epoch: int
    history: dict[str, list[float]]
    stopped_early: bool


def _lr_at(cfg: TrainConfig, epoch: int) -> float:
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * epoch / max(1, cfg.max_epochs)))
    if cfg.schedule == "step":
        return cfg.lr / cfg.step_factor ** (epoch // max(1, cfg.step_every))
    if cfg.schedule == "constant":
        return cfg.lr
    raise ValueError(f"schedule must be 'cosine', 'step' or 'constant', got {cfg.schedule!r}")


def _optimizer(cfg: TrainConfig, net: nn.Module) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"optimizer must be 'adamw' or 'adam', got {cfg.optimizer!r}")


def _batches(n: int, batch_size: int, generator: torch.Generator | None):
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    starts = list(range(0, n, batch_size))
    # BatchNorm needs 2+ samples: fold a final batch of one into the previous one.
    if len(starts) > 1 and n - starts[-1] < 2:
        starts.pop()
    for i, start in enumerate(starts):
        stop = starts[i + 1] if i + 1 < len(starts) else n
        yield order[start:stop]


@torch.no_grad()
def predict_outputs(net: nn.Module, X: np.ndarray | torch.Tensor, pre: Preprocessor,
                    objective: Objective,
                    device: torch.device, batch_size: int = 512,
                    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                    progress: Progress | None = None, precision: str = "float32",
                    memory_format: str = "auto") -> torch.Tensor:
    """Objective outputs (logits, or reconstruction errors) of normalised images X (an array, or
    a tensor already on the device: :func:`device_resident`), on CPU. ``progress``: told which
    images are done (``alive``) after each batch. ``precision`` and ``memory_format`` as in
    TrainConfig."""
    net.eval()
    layout = memory_format_for(device, memory_format, net)
    out = []
    for start in range(0, len(X), batch_size):
        if progress is not None and start:
            progress.alive(f"{start}/{len(X)} images")
        x = X[start:start + batch_size]
        x = host_to(x if isinstance(x, torch.Tensor) else torch.from_numpy(
            np.ascontiguousarray(x)), device)
        if transform is not None:
            x = transform(x)
        x = x.contiguous(memory_format=layout)
        with autocast(device, precision):
            outputs = objective.outputs(net, pre.apply_stretch(x))
        out.append(outputs.float().cpu())
    return torch.cat(out) if out else torch.zeros(0)


def _improved(monitor: str, value: float, best: float | None) -> bool:
    if best is None:
        return True
    return value > best if monitor == "val_auroc" else value < best


def train_net(net: nn.Module, X_train: np.ndarray, y_train: np.ndarray, X_val: np.ndarray,
              y_val: np.ndarray, pre: Preprocessor, cfg: TrainConfig, *, seed: int,
              objective: Objective | None = None,
              epoch_callback: EpochCallback | None = None,
              label: str = "training") -> TrainResult:
    """Train ``net`` in place on normalised images (``pre.normalise`` output); on return it holds
    the weights of the best validation epoch (the last epoch without a validation set).
    Progress (epochs, training loss, validation figures) goes to stderr under ``label``."""
    objective = objective or Objective()
    device = resolve_device(cfg.device)
    layout = memory_format_for(device, cfg.memory_format, net, training=True)
    net.to(device, memory_format=layout)
    # Random draws come from this CPU generator wherever the data is, so a seed gives the same
    # batches and augmentations on every device.
    generator = torch.Generator().manual_seed(int(seed))
    optimizer = _optimizer(cfg, net)
    x_all = torch.from_numpy(np.ascontiguousarray(X_train, dtype=np.float32))
    y_all = torch.as_tensor(np.asarray(y_train, dtype=np.float32))
    if fits_on_device([x_all, y_all], device):
        # kept on the device between epochs: batches are gathered and augmented there
        x_all, y_all = x_all.to(device), y_all.to(device)
    X_val = device_resident(X_val, device) if len(X_val) else X_val
    history: dict[str, list[float]] = {}
    best_value, best_state, best_epoch, stale = None, None, 0, 0
    stopped_early = False
    with Progress(cfg.max_epochs, label, unit="epoch") as progress:
        for epoch in range(cfg.max_epochs):
            start = time.perf_counter()
            lr = _lr_at(cfg, epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            net.train()
            total, count = 0.0, 0
            for idx in _batches(len(x_all), cfg.batch_size, generator):
                rows = host_to(idx, x_all.device)
                x, y = objective.augment(cfg.augment, x_all[rows], y_all[rows], generator)
                with autocast(device, cfg.precision):
                    loss = objective.loss(net, pre.apply_stretch(to_device(x, device, layout)),
                                          host_to(y, device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                # summed on the device in float64 (exact as a Python float): no per-batch sync
                total += loss.detach().double() * len(idx)
                count += len(idx)
                progress.alive(f"epoch {epoch + 1}: {count}/{len(x_all)} images")
            metrics = {"train_loss": float(total) / max(count, 1), "lr": lr}
            if len(X_val):
                outputs = predict_outputs(net, X_val, pre, objective, device, cfg.eval_batch_size,
                                          progress=progress, precision=cfg.precision,
                                          memory_format=cfg.memory_format)
                metrics.update(objective.val_metrics(outputs, None, np.asarray(y_val)))
            metrics["epoch_time_s"] = time.perf_counter() - start
            for key, value in metrics.items():
                history.setdefault(key, []).append(float(value))
            progress.update(**{k: v for k, v in metrics.items() if k not in ("lr", "epoch_time_s")
                               and (objective.shown is None or k in objective.shown)})
            if epoch_callback is not None:
                epoch_callback(epoch, dict(metrics))
            if not len(X_val):
                best_epoch = epoch  # no validation: keep the last epoch
                continue
            monitor = cfg.monitor if cfg.monitor in metrics else "val_loss"
            value = metrics[monitor]
            if math.isfinite(value) and _improved(monitor, value, best_value):
                best_value, best_epoch, stale = value, epoch, 0
                best_state = copy.deepcopy(net.state_dict())
            else:
                stale += 1
                if cfg.patience is not None and stale >= cfg.patience:
                    stopped_early = True
                    break
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    return TrainResult(best_epoch=best_epoch, history=history, stopped_early=stopped_early)
