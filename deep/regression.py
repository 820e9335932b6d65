"""Lens-model regression nets (issue 7, after Schuldt et al. 2021): a ResNet predicting a mean and
a variance for every SIE + shear parameter, trained with the Gaussian negative log-likelihood.

* Targets are named (``info.targets``, e.g. x, y, e1, e2, theta_e, gamma1, gamma2) and standardised
  with the training set's mean and standard deviation; the net outputs (mean, log variance) of the
  standardised values.
* Augmentation must move the targets with the image: a quarter turn of the stamp turns the lens
  centre (a vector) by 90 deg and the ellipticity and shear (spin-2 quantities) by 180 deg, a flip
  mirrors them. :func:`transform_targets` does this exactly (signed permutations, no trigonometry
  rounding), for every sample's own dihedral transform; theta_E is invariant.
* Test-time augmentation predicts on the 8 transforms of each stamp and maps every prediction back
  with the inverse transform before averaging.
* Committees: ``members`` nets from seeds of ``random_state``; the predictive variance is the mean
  of the members' variances plus the variance of their means (the spread of the members).
* Calibration (``calibrate=True``): the likelihood alone gave intervals that were too wide for the
  well-measured parameters (68% intervals covering 93% of the lens centres in a first default run),
  so each parameter's variance is rescaled on the validation split until its 68% interval covers
  68.27% of the validation lenses (the regression analogue of temperature scaling).

Image axes: ``images[..., row, col]`` with x along columns and y along rows (the simulator's
grid), so :func:`lensbench.baselines.transforms.dihedral` index k (k % 4 quarter turns by
``torch.rot90``, then a left-right flip when k >= 4) maps a point (x, y) to (y, -x) per quarter
turn and x -> -x on a flip (``transforms.dihedral_point``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from lensbench.baselines.contract import Method, TaskInfo
from lensbench.baselines.modeling import gaussian_nll, half_width_68, interval_scale
from lensbench.baselines.persistence import placed_params
from lensbench.baselines.registry import registered_name
from lensbench.baselines.transforms import dihedral, inverse_dihedral
from lensbench.deep import checkpoint
from lensbench.deep.methods import as_images, member_seeds
from lensbench.deep.nets import build_net
from lensbench.deep.preprocess import (
    Augment,
    Preprocessor,
    dihedral_each,
    host_to,
    lens_light_preprocessor,
)
from lensbench.deep.progress import Progress
from lensbench.deep.train import (
    Objective,
    TrainConfig,
    deterministic,
    predict_outputs,
    resolve_device,
    train_net,
)

# Pairs of targets that transform together: spin 1 (a position) or spin 2 (ellipticity, shear).
SPIN_PAIRS = {("x", "y"): 1, ("e1", "e2"): 2, ("gamma1", "gamma2"): 2}
_COS = (1, 0, -1, 0)  # cos(m pi/2) and sin(m pi/2) for integer m, exact
_SIN = (0, 1, 0, -1)
LOG_VAR_BOUNDS = (-14.0, 6.0)  # standardised units: sigma from 1e-3 to 20 standard deviations
FORMAT = "lensbench-regressor-checkpoint/1"


def transform_targets(Y: torch.Tensor, ks: torch.Tensor, names: tuple[str, ...],
                      variance: bool = False) -> torch.Tensor:
    """Targets (n, P) of stamps after each stamp's dihedral transform ``ks`` (n,) (see the module
    docstring for the axes). With ``variance=True``, Y holds per-target variances, which the
    signed permutations permute (the squares of their entries)."""
    out = Y.clone()
    ks = host_to(torch.as_tensor(ks).long(), Y.device)
    quarter_turns, flipped = ks % 4, ks >= 4
    for (a, b), spin in SPIN_PAIRS.items():
        if a not in names or b not in names:
            continue
        ia, ib = names.index(a), names.index(b)
        # A quarter turn rotates positions by -90 deg: the angle of a spin-s pair by -s 90 deg.
        m = (-spin * quarter_turns) % 4
        cos = host_to(torch.tensor(_COS, dtype=Y.dtype), Y.device)[m]
        sin = host_to(torch.tensor(_SIN, dtype=Y.dtype), Y.device)[m]
        if variance:
            cos, sin = cos**2, sin**2
            first, second = cos * Y[:, ia] + sin * Y[:, ib], sin * Y[:, ia] + cos * Y[:, ib]
        else:
            first, second = cos * Y[:, ia] - sin * Y[:, ib], sin * Y[:, ia] + cos * Y[:, ib]
        if not variance:
            # The flip x -> -x mirrors the pair: x -> -x for a position, e2 -> -e2 for spin 2.
            mirrored = ia if spin == 1 else ib
            sign = torch.where(flipped, -1.0, 1.0).to(Y.dtype)
            first = first * sign if mirrored == ia else first
            second = second * sign if mirrored == ib else second
        out[:, ia], out[:, ib] = first, second
    return out


def random_dihedral_pairs(x: torch.Tensor, y: torch.Tensor, names: tuple[str, ...],
                          generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Each stamp of a batch through its own random dihedral transform, its targets with it."""
    ks = torch.randint(0, 8, (len(x),), generator=generator)
    return dihedral_each(x, ks), transform_targets(y, ks, names)


class GaussianRegression(Objective):
    """Gaussian negative log-likelihood of standardised targets; the net outputs (n, 2P): P means
    then P log variances. Targets arrive in physical units and are standardised here, after the
    augmentation has transformed them."""

    # every parameter's figures are in the history and the tracker; the line shows the headline
    shown = ("train_loss", "val_loss", "val_nll", "val_theta_e/half_width_68")

    def __init__(self, names: tuple[str, ...], mean: np.ndarray, scale: np.ndarray):
        self.names = tuple(names)
        self.mean = torch.as_tensor(mean, dtype=torch.float32)
        self.scale = torch.as_tensor(scale, dtype=torch.float32)

    def augment(self, augment, x, y, generator):
        x, y = random_dihedral_pairs(x, y, self.names, generator)
        return augment(x, generator), y

    def split(self, outputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = len(self.names)
        return outputs[:, :p], outputs[:, p:].clamp(*LOG_VAR_BOUNDS)

    def nll(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        mean, log_var = self.split(outputs)
        z = (y - self.mean.to(y.device)) / self.scale.to(y.device)
        return 0.5 * (log_var + (z - mean) ** 2 * torch.exp(-log_var)).mean()

    def loss(self, net, x, y):
        return self.nll(net(x), y)

    def val_metrics(self, outputs, x, y):
        """The training loss (``val_loss``, standardised) and, in physical units, the modeling
        kind's own figures named as it names them with ``val_``: ``val_<p>/half_width_68``,
        ``val_<p>/rmse`` and ``val_nll``, so that `bench tune` prunes on its metric."""
        metrics = {"val_loss": float(self.nll(outputs.float(), torch.as_tensor(
            y, dtype=torch.float32)))}
        mean, log_var = (part.double() for part in self.split(outputs.float()))
        scale, offset = self.scale.double(), self.mean.double()
        pred = (mean * scale + offset).numpy()
        variance = (torch.exp(log_var) * scale ** 2).numpy()
        error = pred - np.asarray(y, dtype=np.float64)
        for number, name in enumerate(self.names):
            metrics[f"val_{name}/half_width_68"] = half_width_68(error[:, number])
            metrics[f"val_{name}/rmse"] = float(np.sqrt(np.mean(error[:, number] ** 2)))
        metrics["val_nll"] = gaussian_nll(pred, np.asarray(y, dtype=np.float64), variance)
        return metrics


class ResNetRegressor(Method):
    """A ResNet (or a committee of them) regressing lens-model parameters with uncertainties."""

    kinds = ("modeling",)
    persistence = "net-regressor"  # saved as its own checkpoint (save/load below)
    search_space = {
        "lr": {"type": "float", "low": 3e-4, "high": 1e-2, "log": True},
        "width": {"type": "categorical", "choices": [16, 24, 32]},
        "depth": {"type": "int", "low": 1, "high": 2},
        "weight_decay": {"type": "float", "low": 1e-6, "high": 1e-3, "log": True},
        "max_epochs": {"type": "int", "low": 10, "high": 60},
    }

    def __init__(self, width: int = 16, depth: int = 1, members: int = 1, max_epochs: int = 30,
                 batch_size: int = 64, lr: float = 3e-3, weight_decay: float = 1e-4,
                 patience: int | None = 8, stretch: str = "asinh", tta: str = "mean",
                 calibrate: bool = True, validation_fraction: float = 0.1,
                 device: str = "auto", num_threads: int | None = None, random_state: int = 0,
                 checkpoint_dir: str | None = None, lens_light: bool = False):
        self.width = width
        self.depth = depth
        self.members = members
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.patience = patience
        self.stretch = stretch
        self.tta = tta
        self.calibrate = calibrate
        self.validation_fraction = validation_fraction
        self.device = device
        self.num_threads = num_threads
        self.random_state = random_state
        self.checkpoint_dir = checkpoint_dir
        self.lens_light = lens_light

    def decline(self, info: TaskInfo) -> str | None:
        reason = super().decline(info)
        if reason is None and not info.targets:
            reason = "the task names no regression targets (info.targets)"
        return reason

    def _train_config(self) -> TrainConfig:
        # Dihedral transforms are done with the targets (GaussianRegression.augment); shifts and
        # zooms would move the lens centre and scale theta_E, so only the flux is scaled here.
        return TrainConfig(
            max_epochs=int(self.max_epochs), batch_size=int(self.batch_size), lr=float(self.lr),
            weight_decay=float(self.weight_decay), patience=self.patience,
            augment=Augment(dihedral=False, shift=0.0, flux_scale=0.1), device=self.device,
            num_threads=self.num_threads)

    def fit(self, X, y, info: TaskInfo | None = None, epoch_callback=None):
        X = as_images(X)
        Y = np.asarray(y, dtype=np.float64)
        self.targets_ = tuple(info.targets) if info is not None and info.targets else tuple(
            f"target{i}" for i in range(Y.shape[1]))
        if Y.ndim != 2 or Y.shape != (len(X), len(self.targets_)):
            raise ValueError(f"expected targets of shape ({len(X)}, {len(self.targets_)}) for "
                             f"{self.targets_}, got {Y.shape}")
        if not np.isfinite(Y).all():
            raise ValueError(f"{int((~np.isfinite(Y)).sum())} non-finite target values: the "
                             f"modeling task takes lenses only")
        self.bands_ = tuple(info.bands) if info is not None else tuple(
            f"band{i}" for i in range(X.shape[1]))
        self.image_shape_ = tuple(int(s) for s in X.shape[1:])
        self.target_mean_ = Y.mean(axis=0)
        self.target_scale_ = Y.std(axis=0) + 1e-12
        # lens_light: the smooth lens-light model subtracted first, as the real suite's finders
        # do (deep/preprocess.py)
        self.preprocessor_ = (lens_light_preprocessor(type(self).__name__, info,
                                                      stretch=self.stretch)
                              if self.lens_light else Preprocessor(stretch=self.stretch))
        Xn = self.preprocessor_.fit_normalise(X)
        rng = np.random.default_rng(int(self.random_state))
        order = rng.permutation(len(X))
        n_val = int(round(float(self.validation_fraction) * len(X)))
        val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
        objective = GaussianRegression(self.targets_, self.target_mean_, self.target_scale_)
        cfg = self._train_config()
        self.net_configs_, self.nets_, self.best_epochs_ = [], [], []
        self.history_: dict[str, list[float]] = {}
        for m, seed in enumerate(member_seeds(self.random_state, int(self.members))):
            config = {"arch": "resnet", "in_channels": int(X.shape[1]), "width": int(self.width),
                      "depth": int(self.depth), "outputs": 2 * len(self.targets_)}

            def callback(epoch, metrics, m=m):
                for key, value in metrics.items():
                    self.history_.setdefault(f"member{m}/{key}", []).append(float(value))
                if epoch_callback is not None:
                    epoch_callback(epoch, {f"member{m}/{k}": v for k, v in metrics.items()})

            with deterministic(seed, self.num_threads):
                net = build_net(**config)
                result = train_net(net, Xn[train_idx], Y[train_idx], Xn[val_idx], Y[val_idx],
                                   self.preprocessor_, cfg, seed=seed, objective=objective,
                                   epoch_callback=callback,
                                   label=f"{type(self).__name__} member {m + 1}/{self.members}")
            self.net_configs_.append(config)
            self.nets_.append(net)
            self.best_epochs_.append(result.best_epoch)
        self.objective_ = objective
        self.variance_scale_ = np.ones(len(self.targets_))
        if self.calibrate and len(val_idx) >= 20:
            out = self.predict_with_uncertainty(X[val_idx])
            self.variance_scale_ = interval_scale(out["mean"] - Y[val_idx],
                                                  np.sqrt(out["variance"])) ** 2
        if self.checkpoint_dir:
            self.checkpoint_path_ = str(self.save(Path(self.checkpoint_dir)
                                            / f"{type(self).__name__}.pt"))
        return self

    # ----------------------------------------------------------------- predict
    @torch.no_grad()
    def _member_predictions(self, X) -> tuple[np.ndarray, np.ndarray]:
        """Per member: means and variances (members, n, P) in physical units, averaged over the
        test-time transforms after mapping each back to the original frame."""
        X = as_images(X)
        Xn = self.preprocessor_.normalise(X)
        ks = list(range(8)) if self.tta == "mean" else [0]
        device = resolve_device(self.device)
        scale = torch.as_tensor(self.target_scale_, dtype=torch.float64)
        shift = torch.as_tensor(self.target_mean_, dtype=torch.float64)
        means, variances = [], []
        with (deterministic(int(self.random_state), self.num_threads),
              Progress(len(self.nets_) * len(ks), f"{type(self).__name__} predicting {len(Xn)}",
                       unit="pass") as progress):
            for net in self.nets_:
                net.to(device)
                member_mean, member_var = 0.0, 0.0
                for k in ks:  # one pass per member and test-time transform
                    out = predict_outputs(net, Xn, self.preprocessor_, self.objective_, device,
                                          transform=lambda x, k=k: dihedral(x, k),
                                          progress=progress).double()
                    progress.update()
                    mean, log_var = self.objective_.split(out)
                    back = torch.full((len(out),), inverse_dihedral(k))
                    member_mean = member_mean + transform_targets(
                        mean * scale + shift, back, self.targets_)
                    member_var = member_var + transform_targets(
                        torch.exp(log_var) * scale**2, back, self.targets_, variance=True)
                means.append((member_mean / len(ks)).numpy())
                variances.append((member_var / len(ks)).numpy())
        return np.stack(means), np.stack(variances)

    def predict_with_uncertainty(self, X) -> dict[str, np.ndarray]:
        """mean (n, P), variance (n, P) = mean member variance + member spread**2, and spread."""
        means, variances = self._member_predictions(X)
        spread = means.std(axis=0)
        variance = (variances.mean(axis=0) + spread**2) * self.variance_scale_
        return {"mean": means.mean(axis=0), "variance": variance, "spread": spread}

    def predict_score(self, X) -> np.ndarray:
        return self.predict_with_uncertainty(X)["mean"]

    def diagnostics(self) -> dict[str, float]:
        scales = {f"variance_scale_{name}": float(scale)
                  for name, scale in zip(self.targets_, self.variance_scale_, strict=True)}
        return {"best_epoch_mean": float(np.mean(self.best_epochs_)),
                "n_parameters": float(sum(p.numel() for p in self.nets_[0].parameters())),
                **scales}

    # ----------------------------------------------------------------- checkpoints
    def save(self, path: Path) -> Path:
        """Weights, net configs, preprocessing and target scaling in one torch file of plain data
        and tensors (it loads weights-only; the checks on loading are those of
        deep/checkpoint.py)."""
        name = registered_name(type(self))
        if name is None:
            raise TypeError(f"checkpoints name their method by its registered name, and "
                            f"{type(self).__name__} is not registered")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"format": FORMAT, "method": name, "params": self.get_params(),
                   "targets": list(self.targets_), "bands": list(self.bands_),
                   "image_shape": list(self.image_shape_),
                   "target_mean": [float(v) for v in self.target_mean_],
                   "target_scale": [float(v) for v in self.target_scale_],
                   "preprocessor": self.preprocessor_.state(), "net_configs": self.net_configs_,
                   "variance_scale": [float(v) for v in self.variance_scale_],
                   "state_dicts": [{k: v.detach().cpu() for k, v in net.state_dict().items()}
                                   for net in self.nets_],
                   "best_epochs": [int(e) for e in self.best_epochs_]}
        tmp = path.with_suffix(".tmp")
        torch.save(payload, tmp)
        tmp.replace(path)  # atomic: an interrupted save leaves no truncated checkpoint
        return path

    @classmethod
    def load(cls, path: str | Path, info: TaskInfo | None = None, *,
             data: bytes | None = None, device: str | None = None) -> ResNetRegressor:
        """The fitted regressor saved at ``path`` (or in ``data``, its bytes, ``path`` then
        naming it in errors), every field checked; refused (naming the file) when ``info`` has
        other bands or targets. ``device``: where it predicts (persistence.placed_params).
        Files written before this format pickled numpy arrays: they do not load weights-only
        and are refused (refit the method)."""
        path = Path(path)
        payload = checkpoint.read_payload(path, "lensbench regressor checkpoint", data, hint=(
            f"; regressor files written before the format {FORMAT!r} pickled numpy arrays: "
            f"refit the method to get one that does"))
        if payload.get("format") != FORMAT:
            raise ValueError(f"{path}: not a lensbench regressor checkpoint (format "
                             f"{payload.get('format')!r}, expected {FORMAT!r})")
        get = payload.get
        method_cls = checkpoint.registered_class(path, "method", get("method"),
                                                 lambda found: issubclass(found, cls),
                                                 f"a {cls.__name__}")
        params = placed_params(method_cls, checkpoint.checked_params(path, method_cls,
                                                                     get("params")), device)
        targets = checkpoint.names(path, "targets", get("targets"), "target names")
        bands = checkpoint.names(path, "bands", get("bands"), "band names")
        if info is not None:
            for field, ours, theirs in (("bands", bands, tuple(info.bands)),
                                        ("targets", targets, tuple(info.targets))):
                if ours != theirs:
                    raise ValueError(f"checkpoint {path}: {field} {ours} do not match the "
                                     f"task's {theirs}")
        n = len(targets)
        shape = checkpoint.image_shape(path, "image_shape", get("image_shape"), len(bands))
        mean = checkpoint.finite_numbers(path, "target_mean", get("target_mean"), n)
        scale = checkpoint.finite_numbers(path, "target_scale", get("target_scale"), n,
                                          positive=True)
        variance_scale = checkpoint.finite_numbers(path, "variance_scale", get("variance_scale"),
                                                   n, positive=True)
        prep = checkpoint.preprocessor(path, "preprocessor", get("preprocessor"), len(bands))
        configs = checkpoint.net_configs(path, "net_configs", get("net_configs"),
                                         len(bands) * prep.channels_per_band)
        for i, config in enumerate(configs):
            if config.get("outputs") != 2 * n:
                raise checkpoint.refuse(path, "net_configs", f"member {i}: 'outputs' {2 * n} (a "
                                        f"mean and a log variance per target)",
                                        config.get("outputs"))
        weights = checkpoint.state_dicts(path, "state_dicts", get("state_dicts"), len(configs))
        best = checkpoint.epochs(path, "best_epochs", get("best_epochs"), len(configs))
        nets = checkpoint.build_members(path, configs, weights)

        method = method_cls(**params)
        method.targets_, method.bands_, method.image_shape_ = targets, bands, shape
        method.target_mean_, method.target_scale_ = np.array(mean), np.array(scale)
        method.variance_scale_ = np.array(variance_scale)
        method.preprocessor_ = prep
        method.net_configs_, method.best_epochs_, method.nets_ = configs, best, nets
        method.objective_ = GaussianRegression(method.targets_, method.target_mean_,
                                               method.target_scale_)
        return method


class CommitteeRegressor(ResNetRegressor):
    """Three ResNet regressors from different seeds; their spread enters the variance. No
    test-time augmentation by default: 3 members x 8 transforms cost ~13 ms per lens on the 2-core
    CPU (goal: 10 ms), and the transforms improved the 68% half widths by at most 0.004 (x, y)
    in a first run (theta_E 0.147 -> 0.144", e1 0.043 -> 0.041). 50 epochs: at 30 the
    validation theta_E RMSE was still falling steadily as the learning rate decayed (0.19" at
    epoch 15, 0.155" at 30; best epoch 29 of 30 on average). No early stopping: with patience 8
    one member stopped at epoch 25 of 50 on a noisy validation loss while the learning rate was
    still high (theta_E RMSE 0.157" against 0.154" and 0.140" for the members that ran on); the
    best epoch is still chosen on the validation split."""

    def __init__(self, width: int = 16, depth: int = 1, members: int = 3, max_epochs: int = 50,
                 batch_size: int = 64, lr: float = 3e-3, weight_decay: float = 1e-4,
                 patience: int | None = None, stretch: str = "asinh", tta: str = "none",
                 calibrate: bool = True, validation_fraction: float = 0.1,
                 device: str = "auto", num_threads: int | None = None, random_state: int = 0,
                 checkpoint_dir: str | None = None, lens_light: bool = False):
        super().__init__(width=width, depth=depth, members=members, max_epochs=max_epochs,
                         batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                         patience=patience, stretch=stretch, tta=tta, calibrate=calibrate,
                         validation_fraction=validation_fraction, device=device,
                         num_threads=num_threads, random_state=random_state,
                         checkpoint_dir=checkpoint_dir, lens_light=lens_light)
