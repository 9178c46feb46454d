"""The epoch/step loop shared by the CDM and GAN trainers: data order, checkpoints, resume, stops, validation.

A subclass builds its networks with :meth:`Trainer.add_model` / :meth:`Trainer.add_optimizer` and implements
:meth:`Trainer.train_step` (one optimisation step on a batch, returning its loss terms) and
:meth:`Trainer.validate` (rank 0, unwrapped models). :meth:`Trainer.fit` does the rest:

- data order: :class:`~.distributed.ResumableSampler` (permutation from ``seed + epoch``, identical for every
  world size) and a DataLoader with its *own* generator, so starting an iterator draws nothing from the global
  RNG. A checkpoint stores the epoch and the samples done in it; resuming skips exactly those.
- checkpoints: ``latest.pt`` every ``checkpoint_every`` steps, at every epoch end and when stopping; ``best.pt``
  when validation improves. A run that ends (all epochs, or ``max_steps``) always leaves ``best.pt``: when it
  has not been validated yet it is validated once at the end; without a validation split ``best.pt`` is the
  last state (recorded as such in ``metrics.jsonl``). Each holds models, optimisers, schedulers, GradScalers, extra state (EMA), the RNG
  states of *every* rank, progress and config (:mod:`DCTNetLib.checkpoints.checkpoint`). Only rank 0 writes.
- stops: ``max_steps``, ``stop_after_steps`` (a simulated interruption), Ctrl-C / SIGTERM (agreed between ranks
  with one all-reduce per step) — each ends the loop at a step boundary after writing ``latest.pt``.

With ``deterministic=True`` on CPU, a run stopped after k steps and resumed ends bit-identical to an
uninterrupted one (``Testing/Python/test_training_cdm.py``, ``test_resume_matches_an_uninterrupted_run``;
``test_training_gan.py``, ``test_resume_gives_the_same_weights_as_an_uninterrupted_run``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .. import __version__
from ..checkpoints.checkpoint import (CHECKPOINT_FORMAT, CHECKPOINT_FORMAT_VERSION, CheckpointManager,
                                      non_finite_models)
from ..devices import select_device
from ..errors import OutputError, TrainingDiverged
from .config import TrainConfig, check_config_compatible, config_to_dict, save_config
from .distributed import (DistInfo, ResumableSampler, all_gather_objects, all_reduce_flag, broadcast_object,
                          detect, unwrap)
from .lr_schedules import build_scheduler
from .progress import Progress
from .provenance import write_run_info
from .rng import capture_rng_state, preserved_rng, restore_rng_state, seed_everything
from .run_setup import configure_backends
from .runlog import MetricsLog, now
from .stop_request import (STOP_FILE, StopRequest, claim_run_dir, leave_sigterm_to_the_main_process,
                           release_run_dir)

__all__ = ["Trainer", "FitResult"]


@dataclass(frozen=True)
class FitResult:
    """How :meth:`Trainer.fit` ended.

    Args:
        status: ``"done"`` (all epochs), ``"max_steps"`` (the step limit) or ``"interrupted"`` (Ctrl-C, SIGTERM,
            ``stop_after_steps``).
        step: optimisation steps done in the whole run.
        epoch: completed epochs.
        best_metric: best validation value (``best.pt``), or None before any validation.
        latest: path of the run's ``latest.pt``.
        best_key: the validation metric ``best_metric`` is a value of (``"psnr"``, ``"bone_dice"``, …).
        stopped_by: what asked an interrupted run to stop (``"SIGINT"``, ``"SIGTERM"``, ``"stop file"``), else None.
    """

    status: str
    step: int
    epoch: int
    best_metric: float | None
    latest: Path
    stopped_by: str | None = None
    best_key: str = "psnr"


class Trainer:
    """Base class of the trainers (see the module docstring).

    Args:
        config: resolved training config.
        run_dir: the run folder (created beforehand by :func:`~.run_folder.prepare_run_dir`).
        train_set: map-style dataset of training samples (dicts of tensors).
        val_set: validation dataset or None.
        device: torch device; chosen from ``config.device`` and ``LOCAL_RANK`` when None.
        dist_info: rank information; read from the environment when None.
    """

    kind = "base"
    best_key = "psnr"  # validation metric that selects best.pt (higher is better)

    def __init__(self, config: TrainConfig, run_dir: str | Path, *, train_set: Dataset, val_set: Dataset | None = None,
                 device: torch.device | None = None, dist_info: DistInfo | None = None) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.info = dist_info or detect()
        self.device = device or select_device(config.device, missing_cuda="raise", local_rank=self.info.local_rank)
        self.use_amp = bool(config.amp and self.device.type == "cuda")
        configure_backends(self.device, config.deterministic)
        seed_everything(config.seed)  # identical model initialisation on every rank
        self.train_set, self.val_set = train_set, val_set
        self.models: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, torch.optim.lr_scheduler.LambdaLR] = {}
        self.scalers: dict[str, torch.amp.GradScaler] = {}
        self.epoch = 0        # completed epochs
        self.step = 0         # optimisation steps done
        self.epoch_step = 0   # steps done in the current epoch
        self.best_metric: float | None = None
        self.best_epoch: int | None = None
        self.steps_this_run = 0  # steps of the current fit() call (a resumed run counts from 0 again)
        self.log = MetricsLog(self.run_dir / "metrics.jsonl", enabled=self.info.is_main)
        self.checkpoints = CheckpointManager(self.run_dir)
        self.sampler = ResumableSampler(train_set, self.info, shuffle=True, seed=config.seed)
        self.loader = DataLoader(
            train_set, batch_size=config.batch_size, sampler=self.sampler, num_workers=config.num_workers,
            pin_memory=self.device.type == "cuda", drop_last=False,
            generator=torch.Generator().manual_seed(config.seed),
            worker_init_fn=leave_sigterm_to_the_main_process if config.num_workers else None,
        )

    # ------------------------------------------------------------------ building blocks for subclasses
    def add_model(self, name: str, module: nn.Module, distributed: bool = True) -> nn.Module:
        """Move ``module`` to the device and wrap it in DDP when running distributed; returns what to call."""
        module = module.to(self.device)
        self.models[name] = module
        if self.info.enabled and distributed and any(p.requires_grad for p in module.parameters()):
            ids = [self.device.index] if self.device.type == "cuda" else None
            return nn.parallel.DistributedDataParallel(module, device_ids=ids)
        return module

    def add_optimizer(self, name: str, params: Any) -> torch.optim.Optimizer:
        """Adam with the config's lr/betas (DCT-Net §3.1), its LR schedule and a GradScaler (active on CUDA+AMP)."""
        optimizer = torch.optim.Adam(params, lr=self.config.lr, betas=tuple(self.config.betas))
        self.optimizers[name] = optimizer
        self.schedulers[name] = build_scheduler(optimizer, self.config.lr_schedule, self.config.epochs)
        self.scalers[name] = torch.amp.GradScaler(self.device.type, enabled=self.use_amp)
        return optimizer

    def autocast(self) -> Any:
        """float16 autocast on CUDA with ``amp``; a disabled (no-op) autocast otherwise."""
        return torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.use_amp)

    def optimise(self, name: str, loss: torch.Tensor) -> None:
        """Backward ``loss`` through the GradScaler, clip, step optimiser ``name``, then clear its gradients."""
        optimizer, scaler = self.optimizers[name], self.scalers[name]
        scaler.scale(loss).backward()
        if self.config.grad_clip > 0:
            scaler.unscale_(optimizer)
            params = [p for group in optimizer.param_groups for p in group["params"]]
            nn.utils.clip_grad_norm_(params, self.config.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    def to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}

    @property
    def lr(self) -> float:
        first = next(iter(self.optimizers.values()))
        return float(first.param_groups[0]["lr"])

    # ------------------------------------------------------------------ subclass hooks
    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        raise NotImplementedError

    def validate(self) -> dict[str, float]:
        """Metrics on the validation set (rank 0 only; use unwrapped models)."""
        return {}

    def model_config(self) -> dict[str, Any]:
        return {}

    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue (except the RNG states, gathered in :meth:`save`)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "format_version": CHECKPOINT_FORMAT_VERSION,
            "kind": self.kind,
            "version": __version__,
            "config": config_to_dict(self.config),
            "model_config": self.model_config(),
            "models": {n: unwrap(m).state_dict() for n, m in self.models.items()},
            "optimizers": {n: o.state_dict() for n, o in self.optimizers.items()},
            "schedulers": {n: s.state_dict() for n, s in self.schedulers.items()},
            "scalers": {n: s.state_dict() for n, s in self.scalers.items()},
            **self.extra_state(),
            "progress": {
                "epoch": self.epoch, "step": self.step, "epoch_step": self.epoch_step,
                "samples_done_global": self._samples_done() * self.info.world_size,
                "world_size": self.info.world_size, "best_metric": self.best_metric, "best_epoch": self.best_epoch,
                "sampler": self.sampler.state_dict(),
            },
        }

    def _samples_done(self) -> int:
        return min(self.epoch_step * self.config.batch_size, self.sampler.num_samples)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output (and this rank's RNG state when the world size matches)."""
        for name, module in self.models.items():
            module.load_state_dict(state["models"][name])
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        for name, scheduler in self.schedulers.items():
            scheduler.load_state_dict(state["schedulers"][name])
        for name, scaler in self.scalers.items():
            if state["scalers"].get(name):  # empty when written by a disabled (CPU) scaler
                scaler.load_state_dict(state["scalers"][name])
        self.load_extra_state(state)
        progress = state["progress"]
        self.epoch, self.step = int(progress["epoch"]), int(progress["step"])
        self.best_metric, self.best_epoch = progress["best_metric"], progress["best_epoch"]
        rng = state.get("rng") or []
        if int(progress["world_size"]) == self.info.world_size:
            self.epoch_step = int(progress["epoch_step"])
            restore_rng_state(rng[self.info.rank])
        else:  # same global position, other split; random streams restart (not bit-exact)
            per_rank = int(progress["samples_done_global"]) // self.info.world_size
            self.epoch_step = math.ceil(per_rank / self.config.batch_size)
            seed_everything(self.config.seed + self.info.rank + self.step)

    def save(self, best: bool = False) -> list[Path]:
        """Write ``latest.pt`` (and ``best.pt``) on rank 0; every rank must call this (RNG gather, status)."""
        rng = all_gather_objects(capture_rng_state())
        written: list[Path] = []
        error = None
        if self.info.is_main:
            state = self.state_dict()
            state["rng"] = rng
            try:
                written = self.checkpoints.save(state, best=best)
            except OutputError as exc:
                error = str(exc)
        error = broadcast_object(error)
        if error:
            raise OutputError(f"{error}; training stopped, the previous checkpoint in {self.run_dir} is intact")
        for path in written:
            self.log.write("checkpoint", path=str(path), best=path.name == self.checkpoints.best_path.name,
                           step=self.step, epoch=self.epoch)
        return written

    # ------------------------------------------------------------------ loop
    def _validate_and_rank(self) -> bool:
        """Validate on rank 0; True when the metric improved (every rank gets the answer)."""
        result = None
        if self.info.is_main and self.val_set is not None and len(self.val_set) > 0:
            with preserved_rng(), torch.no_grad():
                metrics = self.validate()
            self.log.write("val", epoch=self.epoch, step=self.step, **metrics)
            value = metrics.get(self.best_key)
            improved = value is not None and math.isfinite(value) and (
                self.best_metric is None or value > self.best_metric)
            if improved:
                self.best_metric, self.best_epoch = float(value), self.epoch
            result = (improved, self.best_metric, self.best_epoch)
        result = broadcast_object(result)
        if result is None:
            return False
        improved, self.best_metric, self.best_epoch = result
        return bool(improved)

    def _stop_reason(self, stop: StopRequest, steps_this_run: int) -> str | None:
        cfg = self.config
        requested = all_reduce_flag(stop.requested, self.device)
        if requested:
            return "interrupted"
        if cfg.stop_after_steps and steps_this_run >= cfg.stop_after_steps:
            return "interrupted"
        if cfg.max_steps and self.step >= cfg.max_steps:
            return "max_steps"
        return None

    def _save_final_best(self) -> None:
        """A finished run without ``best.pt`` (stopped by ``max_steps`` before its first validation, or no
        validation split): validate now and keep the result as ``best.pt``; with nothing to validate on,
        ``best.pt`` is the last state."""
        improved = self._validate_and_rank()
        for module in self.models.values():
            module.train()
        if not improved:
            self.log.write("best_is_latest", step=self.step, epoch=self.epoch,
                           reason="no validation split" if self.val_set is None or not len(self.val_set)
                           else "validation metric not finite")
        self.save(best=True)

    def resume(self) -> None:
        """Load ``latest.pt`` after checking its kind and config (raises with a readable diff on mismatch)."""
        state = self.checkpoints.load_latest(self.kind)
        check_config_compatible(state.get("config", {}), self.config, self.checkpoints.latest_path)
        self.load_state_dict(state)
        self.log.write("resume", epoch=self.epoch, step=self.step)

    def fit(self, resume: bool = False) -> FitResult:
        """Train until ``epochs`` (or a stop); returns how it ended. See the module docstring."""
        cfg = self.config
        self._begin(resume)
        steps_per_epoch = math.ceil(self.sampler.num_samples / cfg.batch_size)
        total = cfg.epochs * steps_per_epoch
        total = min(total, cfg.max_steps) if cfg.max_steps else total
        progress = Progress(total, initial=min(self.step, total), enabled=self.info.is_main and cfg.progress)
        for module in self.models.values():
            module.train()
        self.steps_this_run = 0
        status = "max_steps" if cfg.max_steps and self.step >= cfg.max_steps else "done"  # resumed at the limit
        stop = StopRequest(self.run_dir / STOP_FILE)
        try:
            with stop:  # Ctrl-C, SIGTERM or the stop file (every platform)
                while self.epoch < cfg.epochs and status == "done":
                    status = self._train_epoch(stop, progress)
                self._end(status, stop)
        finally:
            progress.close()
            if self.info.is_main:
                release_run_dir(self.run_dir)
        if status != "interrupted":  # finished: all epochs, or the requested max_steps
            self.log.write("done", step=self.step, epoch=self.epoch, reason=status, best_metric=self.best_metric,
                           best_epoch=self.best_epoch)
        return FitResult(status=status, step=self.step, epoch=self.epoch, best_metric=self.best_metric,
                         latest=self.checkpoints.latest_path,
                         stopped_by=stop.signal_name if status == "interrupted" else None, best_key=self.best_key)

    def _begin(self, resume: bool) -> None:
        """Resume from ``latest.pt`` or seed this rank's random streams; rank 0 records the config and run.json."""
        if self.info.is_main:  # refuses a folder another live run trains into; removes a stale stop file
            claim_run_dir(self.run_dir, command=f"{self.kind} training")
        if resume:
            self.resume()
        else:
            seed_everything(self.config.seed + self.info.rank)  # per-rank random streams (dropout, sampling)
        if self.info.is_main:
            save_config(self.config, self.run_dir / "config.json")
            write_run_info(self.run_dir, config_to_dict(self.config), self.device, self.info,
                           resumed_from_step=self.step if resume else None)

    def _train_epoch(self, stop: StopRequest, progress: Progress) -> str:
        """Train the rest of the current epoch and end it; returns ``"done"`` to go on, or why the run stops
        (``"interrupted"``, ``"max_steps"``: then the epoch is left where it stopped)."""
        cfg = self.config
        self.sampler.set_epoch(self.epoch)
        self.sampler.set_position(self._samples_done())
        for batch in self.loader:
            losses = self.train_step(self.to_device(batch))
            if not all(math.isfinite(value) for value in losses.values()):
                self._stop_if_diverged(losses)
            self.step += 1
            self.epoch_step += 1
            self.steps_this_run += 1
            progress.update(self.epoch, cfg.epochs, losses)
            if self.step % cfg.log_every == 0:
                self.log.write("train", epoch=self.epoch + 1, step=self.step, losses=losses, lr=self.lr, time=now())
            reason = self._stop_reason(stop, self.steps_this_run)
            if reason:
                return reason
            if self.step % cfg.checkpoint_every == 0:
                self.save()
        self._end_epoch()
        return "interrupted" if all_reduce_flag(stop.requested, self.device) else "done"

    def _stop_if_diverged(self, losses: dict[str, float]) -> None:
        """After a non-finite loss: stop when the weights themselves hold NaN/inf (a loss alone may be a skipped
        mixed-precision step). Every rank sees the same weights, so all stop together, before anything is saved."""
        diverged = non_finite_models({name: unwrap(module).state_dict() for name, module in self.models.items()})
        if diverged:
            bad = ", ".join(name for name, value in losses.items() if not math.isfinite(value))
            kept = (f"{self.checkpoints.latest_path} keeps the last finite state (resume from it with a lower "
                    "learning rate)" if self.checkpoints.latest_path.is_file() else "no checkpoint was written")
            raise TrainingDiverged(f"training diverged at step {self.step + 1}: loss {bad} and the weights of "
                                   f"{', '.join(diverged)} are NaN/inf (learning rate {self.config.lr:g} too high?); "
                                   f"{kept}")

    def _end_epoch(self) -> None:
        """Count the epoch, step the LR schedules, validate when due and write ``latest.pt`` (and ``best.pt``)."""
        self.epoch += 1
        self.epoch_step = 0
        with warnings.catch_warnings():
            if self.steps_this_run == 0:  # resumed at an epoch's end: the optimisers stepped in the last run
                warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
            for scheduler in self.schedulers.values():
                scheduler.step()
        improved = False
        if self.epoch % self.config.val_every == 0 or self.epoch == self.config.epochs:
            improved = self._validate_and_rank()
            for module in self.models.values():
                module.train()
        self.save(best=improved)

    def _end(self, status: str, stop: StopRequest) -> None:
        """After the last step: write ``latest.pt`` when the run stopped early, make sure a finished run has
        ``best.pt``, and log an interruption."""
        if status != "done":
            self.save()
        if status != "interrupted" and broadcast_object(not self.checkpoints.best_path.is_file()):
            self._save_final_best()
        if status == "interrupted":
            self.log.write("interrupted", step=self.step, epoch=self.epoch,
                           reason=stop.signal_name or "stop_after_steps")
