"""CNN lens finders as lensbench methods: a CPU ResNet, a committee of them, and CMU DeepLens.

All share :class:`NetFinder`: preprocessing fitted on the training images, one stratified
validation split (seeded) used by every member for early stopping and by the committee for
temperature scaling, N members trained by :func:`lensbench.deep.train.train_net` with seeds from
``random_state``, test-time augmentation over the dihedral group, and calibrated scores.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from lensbench.baselines.contract import Method, TaskInfo
from lensbench.deep.checkpoint import FORMAT as CHECKPOINT_FORMAT
from lensbench.deep.checkpoint import save_checkpoint
from lensbench.deep.committee import (
    combine_members,
    combine_tta,
    fit_temperature,
)
from lensbench.deep.nets import build_net
from lensbench.deep.preprocess import Augment, Preprocessor, dihedral, lens_light_preprocessor
from lensbench.deep.progress import Progress
from lensbench.deep.train import (
    Objective,
    TrainConfig,
    deterministic,
    device_resident,
    memory_format_for,
    predict_outputs,
    resolve_device,
    stratified_split,
    train_net,
)
from scipy.special import expit


def as_images(X) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 4:
        raise ValueError(f"expected images of shape (n, bands, H, W), got {X.shape}")
    return X


def member_seeds(random_state: int, n: int) -> list[int]:
    """Independent seeds for ``n`` members, derived from one random_state."""
    state = np.random.SeedSequence(int(random_state)).generate_state(max(n, 1))
    return [int(s) & 0x7FFFFFFF for s in state[:n]]


def tta_transforms(shape: tuple[int, ...], rule: str) -> list[int]:
    """Dihedral indices used at test time: all 8 on square images, the 4 that keep a
    rectangle's shape otherwise, only the identity without TTA."""
    if rule == "none":
        return [0]
    return list(range(8)) if shape[-1] == shape[-2] else [0, 2, 4, 6]


class NetFinder(Method):
    """Shared machinery; subclasses define ``__init__`` (their defaults) and the hooks
    ``_archs``, ``_net_kwargs`` and ``_train_config``. Speed options for a GPU, both off by
    default until measured on one: ``precision="bfloat16"`` (autocast of the forward passes)
    and ``memory_format="channels_last"`` ("auto": channels-last on the CPU only)."""

    checkpoint_format = CHECKPOINT_FORMAT  # what deep/checkpoint.py reads back into this class
    persistence = "net-finder"  # a model file holds that checkpoint (baselines/persistence.py)
    lens_light = False  # parameters of ResNetFinder; the other nets never subtract it
    lens_light_shape = "weighted"
    lens_light_keep_image = False
    lens_light_profile = "median"

    # ----------------------------------------------------------------- hooks
    def _archs(self) -> list[str]:
        return [a.strip() for a in str(self.arch).split("+")]

    def _net_kwargs(self, arch: str) -> dict:
        if arch == "resnet":
            # stages and stem_pool only where asked: the configs (and so the files) of the
            # default nets stay as they were
            extra = {"stages": int(self.stages)} if int(self.stages) != 3 else {}
            if self.stem_pool:
                extra["stem_pool"] = True
            return {"width": int(self.width), "depth": int(self.depth), **extra}
        return {}

    def _train_config(self) -> TrainConfig:
        return TrainConfig(
            max_epochs=int(self.max_epochs), batch_size=int(self.batch_size), lr=float(self.lr),
            weight_decay=float(self.weight_decay), schedule=self.schedule,
            patience=self.patience, augment=Augment(), device=self.device,
            num_threads=self.num_threads, precision=self.precision,
            memory_format=self.memory_format)

    def _preprocessor(self, info: TaskInfo | None = None) -> Preprocessor:
        if not self.lens_light:  # (lens_light_keep_image=True alone is refused there)
            return Preprocessor(stretch=self.stretch, crop=self.crop,
                                lens_light_keep_image=bool(self.lens_light_keep_image))
        return lens_light_preprocessor(type(self).__name__, info, stretch=self.stretch,
                                       crop=self.crop, lens_light_shape=self.lens_light_shape,
                                       lens_light_keep_image=bool(self.lens_light_keep_image),
                                       lens_light_profile=self.lens_light_profile)

    # ----------------------------------------------------------------- fit
    def fit(self, X, y, info: TaskInfo | None = None, epoch_callback=None):
        X = as_images(X)
        y = np.asarray(y).astype(np.float32).ravel()
        if len(y) != len(X):
            raise ValueError(f"{len(X)} images but {len(y)} labels")
        self.bands_ = tuple(info.bands) if info is not None else tuple(
            f"band{i}" for i in range(X.shape[1]))
        self.image_shape_ = tuple(int(s) for s in X.shape[1:])
        self.preprocessor_ = self._preprocessor(info)
        Xn = self.preprocessor_.fit_normalise(X)
        train_idx, val_idx = stratified_split(y, float(self.validation_fraction),
                                              int(self.random_state))
        cfg = self._train_config()
        archs = self._archs()
        self.net_configs_, self.nets_, self.best_epochs_ = [], [], []
        self.history_: dict[str, list[float]] = {}
        offset = 0
        for m, seed in enumerate(member_seeds(self.random_state, int(self.members))):
            arch = archs[m % len(archs)]
            config = {"arch": arch, "in_channels": int(Xn.shape[1]), **self._net_kwargs(arch)}
            callback = _member_callback(self.history_, epoch_callback, m, offset)
            with deterministic(seed, self.num_threads):
                net = build_net(**config)
                result = train_net(net, Xn[train_idx], y[train_idx], Xn[val_idx], y[val_idx],
                                   self.preprocessor_, cfg, seed=seed,
                                   epoch_callback=callback,
                                   label=f"{type(self).__name__} member {m + 1}/{self.members}")
            offset += len(result.history["train_loss"])
            self.net_configs_.append(config)
            self.nets_.append(net)
            self.best_epochs_.append(result.best_epoch)
        self.best_epoch_ = self.best_epochs_[0]
        self._calibrate(Xn[val_idx], y[val_idx])
        if self.checkpoint_dir:
            path = Path(self.checkpoint_dir) / f"{type(self).__name__}-{self._tag()}.pt"
            self.checkpoint_path_ = str(save_checkpoint(self, path))
        return self

    def _tag(self) -> str:
        params = {k: v for k, v in self.get_params().items() if k != "checkpoint_dir"}
        blob = json.dumps([params, self.bands_, self.image_shape_], sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def _calibrate(self, Xn_val: np.ndarray, y_val: np.ndarray) -> None:
        """Temperature scaling on the validation logits of the combined score."""
        self.temperature_ = 1.0
        self.ece_before_ = self.ece_after_ = float("nan")
        if not self.calibrate or len(np.unique(y_val)) < 2:
            return
        z, _ = self._combined(Xn_val, temperature=1.0)
        fitted = fit_temperature(z, y_val)
        self.temperature_ = fitted.temperature
        self.ece_before_, self.ece_after_ = fitted.ece_before, fitted.ece_after
        self.nll_before_, self.nll_after_ = fitted.nll_before, fitted.nll_after

    # ----------------------------------------------------------------- predict
    def member_logits(self, Xn: np.ndarray) -> np.ndarray:
        """(n_members, n) TTA-combined logits of normalised images."""
        device = resolve_device(self.device)
        ks = tta_transforms(Xn.shape, self.tta)
        Xn = device_resident(Xn, device)  # read members x transforms times
        rule = "mean" if self.tta == "none" else self.tta
        out = []
        with (deterministic(0, self.num_threads),
              Progress(len(self.nets_) * len(ks), f"{type(self).__name__} scoring {len(Xn)}",
                       unit="pass") as progress):
            for net in self.nets_:
                net.to(device, memory_format=memory_format_for(device, self.memory_format, net))
                per_k = []
                for k in ks:  # one pass per member and test-time transform
                    per_k.append(predict_outputs(
                        net, Xn, self.preprocessor_, _OBJECTIVE, device,
                        transform=(lambda x, k=k: dihedral(x, k)) if k else None,
                        progress=progress, precision=self.precision,
                        memory_format=self.memory_format).double().numpy())
                    progress.update()
                out.append(combine_tta(np.stack(per_k), rule))
        return np.stack(out)

    def _combined(self, Xn: np.ndarray, temperature: float):
        """(combined logit / T, spread of the members' calibrated probabilities)."""
        members = self.member_logits(Xn)
        combined = combine_members(members, self.combine) / temperature
        if len(members) == 1:
            return combined, np.zeros(members.shape[1])
        return combined, expit(members / temperature).std(axis=0)

    def predict_score_with_spread(self, X) -> tuple[np.ndarray, np.ndarray]:
        """(calibrated lens probability, standard deviation of the calibrated member scores)."""
        X = as_images(X)
        if X.shape[1] != self.image_shape_[0]:
            raise ValueError(f"{type(self).__name__} was fitted on {self.image_shape_[0]} bands "
                             f"{self.bands_}, got images with {X.shape[1]}")
        if len(X) == 0:
            return np.zeros(0), np.zeros(0)
        z, spread = self._combined(self.preprocessor_.normalise(X), self.temperature_)
        return expit(z), spread

    def predict_score(self, X) -> np.ndarray:
        return self.predict_score_with_spread(X)[0]

    def diagnostics(self) -> dict[str, float]:
        """Calibration and training facts recorded beside the metrics of a run."""
        return {"members": float(len(self.nets_)), "temperature": float(self.temperature_),
                "val_ece_before_calibration": float(self.ece_before_),
                "val_ece_after_calibration": float(self.ece_after_),
                "best_epoch_mean": float(np.mean(self.best_epochs_))}


def _member_callback(history: dict, epoch_callback, member: int, offset: int):
    """Forwards a member's epochs as one running epoch count, with the member index."""
    def callback(epoch: int, metrics: dict) -> None:
        metrics = {**metrics, "member": float(member)}
        for key, value in metrics.items():
            history.setdefault(key, []).append(float(value))
        if epoch_callback is not None:
            epoch_callback(offset + epoch, metrics)
    return callback


_OBJECTIVE = Objective()  # classifier outputs: logits

_COMMON_SPACE = {
    "lr": {"type": "float", "low": 3e-4, "high": 1e-2, "log": True},
    "weight_decay": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True},
    "batch_size": {"type": "categorical", "choices": [32, 64, 128]},
    "stretch": {"type": "categorical", "choices": ["none", "sqrt", "asinh"]},
}


class ResNetFinder(NetFinder):
    """A CPU-sized pre-activation ResNet (``width`` filters, ``depth`` units per stage, stride-2
    stem), trained with AdamW and a cosine schedule on the central ``crop`` pixels with an asinh
    stretch; ``members`` > 1 makes it a committee (``arch="resnet+deeplens"`` mixes nets)."""

    search_space = {
        **_COMMON_SPACE,
        "width": {"type": "int", "low": 8, "high": 48},
        "depth": {"type": "int", "low": 1, "high": 3},
        "stages": {"type": "int", "low": 3, "high": 4},
        "stem_pool": {"type": "categorical", "choices": [False, True]},
        "crop": {"type": "categorical", "choices": [32, 48, 64, 101], "at_most": "stamp"},
        "max_epochs": {"type": "int", "low": 10, "high": 60},
    }

    def __init__(self, arch: str = "resnet", width: int = 16, depth: int = 1, members: int = 1,
                 combine: str = "mean", tta: str = "none", calibrate: bool = True,
                 crop: int | None = 64, stretch: str = "asinh", max_epochs: int = 20,
                 batch_size: int = 64, lr: float = 3e-3, weight_decay: float = 1e-4,
                 schedule: str = "cosine", patience: int | None = 6,
                 validation_fraction: float = 0.15, device: str = "auto",
                 num_threads: int | None = None, checkpoint_dir: str | None = None,
                 random_state: int = 0, precision: str = "float32",
                 memory_format: str = "auto", lens_light: bool = False,
                 lens_light_shape: str = "weighted", lens_light_keep_image: bool = False,
                 lens_light_profile: str = "median", stem_pool: bool = False,
                 stages: int = 3):
        self.arch = arch
        self.width = width
        self.depth = depth
        self.members = members
        self.combine = combine
        self.tta = tta
        self.calibrate = calibrate
        self.crop = crop
        self.stretch = stretch
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.schedule = schedule
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.device = device
        self.num_threads = num_threads
        self.checkpoint_dir = checkpoint_dir
        self.random_state = random_state
        self.precision = precision
        self.memory_format = memory_format
        # Subtract the lens light (baselines/lenslight.py) from every image the net sees, in
        # fit and in predict, so a saved model (bench scan, bench predict) does it too; its
        # model's shape by round-"weighted" or "adaptive" moments, its profile the annulus
        # medians or ("sersic-clipped") those with annuli raised by arcs replaced by a Sersic fit
        # (baselines/arcfinder.py: elliptical_model).
        self.lens_light = lens_light
        self.lens_light_shape = lens_light_shape
        # ... and with lens_light_keep_image the image itself beside the residual (deep/
        # preprocess.py): in one band the subtraction takes a ring with the lens.
        self.lens_light_keep_image = lens_light_keep_image
        self.lens_light_profile = lens_light_profile
        # A max-pool after the stem, or a fourth stage (deep/nets.py: ResNet): either doubles
        # the receptive field in pixels, for stamps sampled finer than the nets were sized for.
        self.stem_pool = stem_pool
        self.stages = stages


class CommitteeFinder(ResNetFinder):
    """A committee of ResNets (Schaefer et al. 2018): ``members`` seeds, mean of the members,
    test-time augmentation over the 8 dihedral transforms, temperature-scaled."""

    search_space = {
        **ResNetFinder.search_space,
        "members": {"type": "int", "low": 2, "high": 5},
        "combine": {"type": "categorical", "choices": ["mean", "median", "vote"]},
        "tta": {"type": "categorical", "choices": ["none", "mean", "product"]},
    }

    def __init__(self, arch: str = "resnet", width: int = 16, depth: int = 1, members: int = 3,
                 combine: str = "mean", tta: str = "mean", calibrate: bool = True,
                 crop: int | None = 64, stretch: str = "asinh", max_epochs: int = 20,
                 batch_size: int = 64, lr: float = 3e-3, weight_decay: float = 1e-4,
                 schedule: str = "cosine", patience: int | None = 6,
                 validation_fraction: float = 0.15, device: str = "auto",
                 num_threads: int | None = None, checkpoint_dir: str | None = None,
                 random_state: int = 0, precision: str = "float32",
                 memory_format: str = "auto", lens_light: bool = False,
                 lens_light_shape: str = "weighted", lens_light_keep_image: bool = False,
                 lens_light_profile: str = "median", stem_pool: bool = False,
                 stages: int = 3):
        super().__init__(arch=arch, width=width, depth=depth, members=members, combine=combine,
                         tta=tta, calibrate=calibrate, crop=crop, stretch=stretch,
                         max_epochs=max_epochs, batch_size=batch_size, lr=lr,
                         weight_decay=weight_decay, schedule=schedule, patience=patience,
                         validation_fraction=validation_fraction, device=device,
                         num_threads=num_threads, checkpoint_dir=checkpoint_dir,
                         random_state=random_state, precision=precision,
                         memory_format=memory_format, lens_light=lens_light,
                         lens_light_shape=lens_light_shape,
                         lens_light_keep_image=lens_light_keep_image,
                         lens_light_profile=lens_light_profile, stem_pool=stem_pool,
                         stages=stages)


class DeepLensFinder(NetFinder):
    """CMU DeepLens (Lanusse et al. 2018) with its training recipe: Adam, learning rate 1e-3
    divided by 10 every 40 of 120 epochs, batches of 128, augmentation by rotations, flips and
    zoom 0.9-1, full stamps, noise-normalised pixels. ``members`` > 1 gives the "voting" variant
    (the mean of the members). Slow on a CPU: ~4-20 training images/s at 64x64x4."""

    search_space = {
        "lr": {"type": "float", "low": 1e-4, "high": 3e-3, "log": True},
        "max_epochs": {"type": "int", "low": 10, "high": 120},
    }

    def __init__(self, members: int = 1, combine: str = "mean", tta: str = "none",
                 calibrate: bool = True, crop: int | None = None, stretch: str = "none",
                 max_epochs: int = 120, batch_size: int = 128, lr: float = 1e-3,
                 step_every: int = 40, validation_fraction: float = 0.1, device: str = "auto",
                 num_threads: int | None = None, checkpoint_dir: str | None = None,
                 random_state: int = 0, precision: str = "float32",
                 memory_format: str = "auto"):
        self.members = members
        self.combine = combine
        self.tta = tta
        self.calibrate = calibrate
        self.crop = crop
        self.stretch = stretch
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.step_every = step_every
        self.validation_fraction = validation_fraction
        self.device = device
        self.num_threads = num_threads
        self.checkpoint_dir = checkpoint_dir
        self.random_state = random_state
        self.precision = precision
        self.memory_format = memory_format

    def _archs(self) -> list[str]:
        return ["deeplens"]

    def _train_config(self) -> TrainConfig:
        return TrainConfig(
            max_epochs=int(self.max_epochs), batch_size=int(self.batch_size), lr=float(self.lr),
            weight_decay=0.0, optimizer="adam", schedule="step", step_every=int(self.step_every),
            step_factor=10.0, patience=None,
            augment=Augment(dihedral=True, shift=0.0, zoom=(0.9, 1.0), flux_scale=0.0),
            device=self.device, num_threads=self.num_threads, precision=self.precision,
            memory_format=self.memory_format)
