"""Training (sections 2.4, 2.5, 2.7): the loop, validation, thresholds, checkpoints, DDP, events.

"We run the algorithm for a fixed number of epochs (i.e., passes over the entire training set),
picking the mini-batches randomly without replacement for each epoch, so that each sample is
picked exactly once per epoch." Data loading runs in DataLoader worker processes so decoding
and augmentation of the next batches overlap the optimiser step ("pre-processing [...] to
essentially happen 'for free'").

The recipes and the options of a run are in ``recipes.py`` (no torch there).

Under ``torchrun`` (WORLD_SIZE > 1) each process trains on its shard through
DistributedDataParallel (gloo on CPU, nccl on CUDA); only rank 0 validates and writes files.
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from .data import (
    CROP,
    ImageError,
    Sample,
    ScaledBatches,
    TrainingSet,
    compute_mean_pixel,
    label_vocabulary,
    load_samples,
    multi_hot,
    split_samples,
    to_tensor,
)
from .eta import MeasuredRate, RemainingWork, epoch_ends_after
from .finetune import (
    FrozenMethod,
    FrozenTrainer,
    HeldOutMaps,
    anchors,
    cross_validated_label_scales,
    pull_toward_start,
    trainable_start,
    training_views,
)
from .loss import multilabel_softmax_loss
from .metrics import mean_average_precision, set_metrics
from .model import build_model
from .modelfile import TaggerModel, add_labels, load_model, new_card, save_model
from .newlabels import FOLDS as NEW_LABEL_FOLDS
from .newlabels import MAX_IMAGES as NEW_LABEL_FIT_IMAGES
from .newlabels import final_fit_cost, fit_new_rows
from .optim import PaperRMSprop, warmup_cosine
from .predict import PredictConfig, Predictor
from .recipes import MIN_IMAGES_TO_JUDGE, Recipe, TrainConfig
from .replay import ReplayError, load_replay, replay_path_for, save_replay
from .runtime import autocast, configure_cpu, pick_device, use_bf16
from .spec import arch_spec
from .threshold import Threshold, fit_threshold


class TrainingDiverged(Exception):
    """The loss stopped being a finite number: the weights are lost, and nothing is written."""


class Events:
    """JSON-lines progress for the GUI (``--events``), or a one-line progress bar on a terminal."""

    def __init__(self, target: str | None, enabled: bool = True, append: bool = False):
        """``append``: a resumed run adds to the file its first part wrote; a new run starts it afresh."""
        self.enabled = enabled
        self.file = None
        if enabled and target == "-":
            self.file = sys.stdout
        elif enabled and target:
            self.file = open(target, "a" if append else "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self.bar = enabled and not target and sys.stderr.isatty()

    def emit(self, event: str, **fields) -> None:
        if not self.enabled:
            return
        if self.file:
            self.file.write(json.dumps({"event": event, "time": round(time.time(), 3), **fields}) + "\n")
            self.file.flush()
        elif event == "step" and self.bar:
            done = fields["step_in_epoch"] / max(1, fields["steps_per_epoch"])
            sys.stderr.write(f"\repoch {fields['epoch']}/{fields['epochs']} [{'#' * int(30 * done):<30}] "
                             f"loss {fields['loss']:.4f}  {fields['images_per_s']:.0f} img/s  "
                             f"ETA {fields['eta_s'] / 60:.1f} min ")
            sys.stderr.flush()
        elif event != "step":
            if self.bar:
                sys.stderr.write("\n")
            brief = {k: v for k, v in fields.items() if k not in ("per_label", "history")}
            print(f"[{event}] {json.dumps(brief)}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.file and self.file is not sys.stdout:
            self.file.close()


class CancelFlag:
    """SIGINT / SIGTERM ask the loop to stop after the current step, keeping a checkpoint."""

    def __init__(self):
        self.set = False
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, *_):
        self.set = True

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


# --- pieces of the loop -------------------------------------------------------------------------

def make_optimizer(net: torch.nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    if recipe.optimizer == "paper-rmsprop":
        return PaperRMSprop(net.parameters(), lr=recipe.lr, lr_max=recipe.lr_max, weight_decay=recipe.weight_decay)
    decay = [p for n, p in net.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in net.named_parameters() if p.ndim <= 1]
    return torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=recipe.lr)


def schedule_factor(recipe: Recipe, step: int, total: int) -> float:
    """Multiplier of the base rates at ``step`` of ``total``: constant, or warm-up then cosine."""
    if recipe.schedule == "constant":
        return 1.0
    return warmup_cosine(step, total, recipe.warmup_fraction)


def freeze_norm_stats(net: nn.Module) -> None:
    """Batch norm normalises with its running statistics and stops updating them (its scale and
    shift still learn). A fine-tune on a few hundred of one person's images would otherwise replace
    statistics gathered over the whole training set with those of a few batches."""
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def epochs_within_budget(planned: int, epoch_seconds: list[float], elapsed_s: float, budget_s: float) -> int:
    """How many epochs fit in ``budget_s`` when the epochs done so far (≥ 1) took ``epoch_seconds``
    each and ``elapsed_s`` in all: never fewer than are done, never more than ``planned``. An epoch
    is taken to last the median of those done, so one slow epoch (a first one paying one-off
    set-up, or sharing the machine with other work) does not cut the run for good; the plan is
    made again after every epoch. The learning-rate schedule is fitted to the epochs that fit, so
    a time-boxed run still ends with its rate annealed."""
    done = len(epoch_seconds)
    per_epoch = float(np.median(epoch_seconds))
    return int(max(done, min(planned, done + (budget_s - elapsed_s) // max(per_epoch, 1e-9))))


def planned_steps(epochs: int, steps_per_epoch: int, max_steps: int | None) -> int:
    """The optimiser steps the schedule spans: ``epochs`` of them, or ``max_steps`` when fewer."""
    return min(epochs * steps_per_epoch, max_steps) if max_steps else epochs * steps_per_epoch


def set_rates(optimizer: torch.optim.Optimizer, recipe: Recipe, factor: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = recipe.lr * factor
        if "lr_max" in group:
            group["lr_max"] = recipe.lr_max * factor


def validation_scores(model: TaggerModel, samples: list[Sample], device: str, bf16: bool | None,
                      baseline: bool = False, seed: int = 0, single: bool = True) -> dict[str, np.ndarray]:
    """Final single-pass score vectors (unless not ``single``) and, with ``baseline``, 10-crop
    scores of ``samples``, with their true labels."""
    predictor = Predictor(model, device=device, bf16=bf16)
    index = {lab: i for i, lab in enumerate(model.labels)}
    rng = np.random.default_rng(seed)
    singles, crops, truth = [], [], []
    for s in samples:
        try:
            rgb = predictor.read(s.image)
        except ImageError:
            continue
        if single:
            singles.append(predictor.predict_array(rgb).scores)
        if baseline:
            crops.append(predictor.ten_crop_scores(rgb, rng))
        truth.append(multi_hot(s.labels, index) > 0)
    out = {"truth": np.array(truth).reshape(-1, len(index))}
    if single:
        out["single"] = np.array(singles).reshape(-1, len(index))
    if baseline:
        out["baseline"] = np.array(crops).reshape(-1, len(index))
    return out


def threshold_kind(requested: str, n_held_out: int, parent: dict | None = None) -> str:
    """The threshold to fit: the one asked for; for ``auto``, a fine-tune keeps its parent's kind
    (chosen when the parent was measured, e.g. by bench/run.py --apply-best), and otherwise the
    paper's linear threshold needs ≥ 200 held-out images (67 weights and a bias) and falls back to
    a single global one below that."""
    if requested != "auto":
        return requested
    if parent and parent.get("kind") in ("linear", "global"):
        return parent["kind"]
    return "linear" if n_held_out >= 200 else "global"


def evaluate_scores(scores: np.ndarray, truth: np.ndarray, kind: str, label_scales: list[float] | None = None
                    ) -> tuple[dict, object]:
    """Fit a threshold of ``kind`` on (scores, truth) and report the metrics it gives there; the new
    labels' own cuts (``label_scales``, placed before) are kept as they are."""
    threshold = fit_threshold(scores, truth, kind=kind, at_least_one=True)
    threshold.label_scales = list(label_scales or [])
    metrics = set_metrics(threshold.select(scores), truth)
    metrics["mAP"] = mean_average_precision(scores, truth)
    return metrics, threshold


# --- checkpoints --------------------------------------------------------------------------------

def checkpoint_dir(out: Path) -> Path:
    return out.with_name(out.name + ".ckpt")


def save_checkpoint(path: Path, net: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Weights, optimiser state and loop state in one safetensors file (no pickle)."""
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    opt = optimizer.state_dict()
    for pid, pstate in opt["state"].items():
        for key, value in pstate.items():
            if torch.is_tensor(value):
                tensors[f"optim.{pid}.{key}"] = value.detach().cpu().contiguous().reshape(value.shape)
            else:
                tensors[f"optim.{pid}.{key}"] = torch.tensor(value)
    groups = [{k: v for k, v in g.items() if k != "params"} | {"params": g["params"]} for g in opt["param_groups"]]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"state": json.dumps(state), "param_groups": json.dumps(groups)})
    os.replace(tmp, path)


def _checkpoint_metadata(path: Path) -> dict:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return f.metadata()
    except (SafetensorError, OSError) as e:
        raise ValueError(f"--resume: the checkpoint {path} is damaged ({e}); delete it to train from the start"
                         ) from e


def checkpoint_state(path: Path) -> dict:
    """The loop state a checkpoint was written with, without loading its weights."""
    return json.loads(_checkpoint_metadata(path)["state"])


def load_checkpoint(path: Path, net: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    meta = _checkpoint_metadata(path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise ValueError(f"--resume: the checkpoint {path} is damaged ({e}); delete it to train from the start"
                         ) from e
    net.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    opt_state: dict = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, pid, key = k.split(".", 2)
            opt_state.setdefault(int(pid), {})[key] = v
    optimizer.load_state_dict({"state": opt_state, "param_groups": json.loads(meta["param_groups"])})
    return json.loads(meta["state"])


# --- the loop ---------------------------------------------------------------------------------

# With "auto", the share of the images with a new label that must also carry a label the model knew
# for the new rows to be fitted on the test form ("fit"); below it they are learnt with the head.
FIT_NEEDS_OLD_LABELS = 0.5


def new_label_mode(requested: str, samples: list[Sample], new: list[str], learns: str, epochs: int
                   ) -> tuple[str, str]:
    """How the labels a fine-tune adds are learnt, and why. "auto" chooses by the data (BENCHMARKS.md,
    issue 28): the test-form fit (newlabels.py) keeps each image's known labels above the threshold
    while it places the new rows, which holds the old labels where the images carry them (a new tag
    `cat` on scenes tagged with the labels the model knew); on a folder tagged only with the person's
    own words it has nothing to hold, and the old labels were lost (mix-ood accuracy 0.425 → 0.045 on
    the validation pools), while rows learnt with the head beside the replayed training scenes kept
    them (0.396) and ranked the new tags better (mAP 0.300 against 0.162)."""
    if requested != "auto":
        return requested, f"--new-labels {requested}"
    if learns == "all":
        return "fit", "every weight learns: the new rows are fitted on the test form"
    if epochs == 0:
        return "fit", "no epochs: the new rows are fitted on the test form and nothing else learns"
    tagged = [s for s in samples if set(new) & set(s.labels)]
    with_old = sum(1 for s in tagged if set(s.labels) - set(new)) / max(1, len(tagged))
    if with_old >= FIT_NEEDS_OLD_LABELS:
        return "fit", (f"{with_old:.0%} of the images with a new label carry labels the model knew: the new rows "
                       "are fitted on the test form, holding those labels")
    return "train", (f"{with_old:.0%} of the images with a new label carry labels the model knew: the new rows "
                     "are learnt with the head (replayed training scenes hold the old labels)")


def _distributed() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0"))) if world > 1 else (0, 1, 0)


def _initial_model(cfg: TrainConfig, train: list[Sample], recipe: Recipe, events: Events
                   ) -> tuple[TaggerModel, list[str]]:
    """The model to train and the labels it gains (a fine-tune's labels its parent lacks)."""
    if cfg.init:
        model = load_model(cfg.init)
        new = [lab for lab in label_vocabulary(train) if lab not in model.labels]
        if new:
            add_labels(model, new)
            events.emit("labels_added", labels=new)
        return model, new
    labels = label_vocabulary(train)
    if not labels:
        raise ValueError("the training data has no labels (no .txt sidecars with tags, or an empty manifest)")
    spec = arch_spec(cfg.arch, recipe.norm)
    net = build_model(spec, len(labels), init=recipe.init)
    # a resumed run takes the mean pixel from its checkpoint: no need to measure it again
    mean = [0.0, 0.0, 0.0] if cfg.resume else compute_mean_pixel(train, seed=cfg.seed)
    return TaggerModel(net, new_card(spec, labels, mean)), []


def train(cfg: TrainConfig) -> TaggerModel | None:
    """Train (or fine-tune) and write ``cfg.out``; returns the model on rank 0."""
    rank, world, local_rank = _distributed()
    events = Events(cfg.events, enabled=rank == 0, append=cfg.resume)
    try:
        return _train(cfg, rank, world, local_rank, events)
    except Exception as e:
        events.emit("error", message=f"{type(e).__name__}: {e}")
        raise
    finally:
        events.close()
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


@dataclass
class _Run:
    """What every epoch of a run (every weight learns) uses; set up once by :func:`_set_up_run`."""

    cfg: TrainConfig
    recipe: Recipe              # replaced when a time budget changes the number of epochs
    model: TaggerModel
    net: nn.Module
    ddp_net: nn.Module          # ``net``, wrapped in DistributedDataParallel under torchrun
    optimizer: torch.optim.Optimizer
    loader: DataLoader
    sampler: object             # the DistributedSampler or ScaledBatches to tell each epoch, or None
    anchored: list              # (weight, starting value) pairs pulled back after each step (L2-SP)
    device: torch.device
    bf16: bool
    rank: int
    world: int
    events: Events
    steps_per_epoch: int
    total_steps: int


@dataclass
class _Best:
    """The weights of the best epoch so far, and its held-out scores when it was validated."""

    weights: dict
    scores: dict | None = None


def _train(cfg: TrainConfig, rank: int, world: int, local_rank: int, events: Events) -> TaggerModel | None:
    started = time.time()
    device, bf16 = _set_up_device(cfg, local_rank)
    torch.manual_seed(cfg.seed)

    # the data, the recipe for its size, and the model (a fine-tune's grows the labels it lacks)
    train_samples, val_samples = _load_data(cfg)
    recipe = cfg.recipe_for(len(train_samples))
    model, new_labels = _initial_model(cfg, train_samples, recipe, events)
    if new_labels:
        mode, why = new_label_mode(cfg.new_labels, train_samples, new_labels, recipe.learns, recipe.epochs)
        cfg = replace(cfg, new_labels=mode)
        model.card["new_labels"] = {"mode": mode, "why": why}  # moved into the provenance by _finish
        events.emit("new_labels_mode", mode=mode, why=why)
    if recipe.learns != "all" and world > 1:
        raise ValueError(f"a fine-tune that learns only its {recipe.learns} runs in one process (it takes a minute "
                         "or two): run it without torchrun, or with --learn all")
    first_fit = (0.0, [])
    if new_labels and cfg.new_labels == "fit" and rank == 0 and not cfg.resume:
        # before the first step (DistributedDataParallel hands rank 0's weights to the others)
        first_fit = _fit_new_labels(model, train_samples, new_labels, device, bf16, cfg.seed, events,
                                    "before training", final=recipe.epochs == 0)
    if recipe.learns != "all":
        return _train_frozen(cfg, model, new_labels, train_samples, val_samples, recipe, device, bf16, events,
                             started, first_fit)

    # loader, optimiser, schedule; a resumed run continues from its checkpoint
    run = _set_up_run(cfg, model, new_labels, train_samples, recipe, device, bf16, rank, world, events)
    ckpt = checkpoint_dir(Path(cfg.out)) / "last.safetensors"
    state = (_resume(ckpt, run.net, run.optimizer, model, recipe, events) if cfg.resume else
             {"epoch": 0, "step": 0, "best": None, "history": [], "skipped_unlabelled": 0, "learns": "all"})
    prior_seconds = state.get("elapsed_s", 0.0)  # training time of earlier runs, when resuming
    state["device"] = f"{device.type}{' (bf16)' if bf16 else ''}"
    events.emit("start", train_images=len(train_samples), val_images=len(val_samples), labels=len(model.labels),
                epochs=recipe.epochs, steps_per_epoch=run.steps_per_epoch, batch_size=recipe.batch_size,
                recipe=asdict(recipe), device=str(device), bf16=bf16, world_size=world,
                init=cfg.init, out=str(cfg.out))
    best = _Best(_copy_weights(run.net))
    cancelled = False
    first_epoch = state["epoch"]
    planned_epochs = recipe.epochs - first_epoch  # what a time budget may cut and give back
    epoch_seconds: list[float] = []               # this run's epochs, validation included
    with CancelFlag() as cancel:
        for epoch in range(first_epoch, recipe.epochs):
            if epoch >= run.recipe.epochs or state["step"] >= run.total_steps or cancelled:
                break
            # one pass over the training images
            t_epoch = time.time()
            record, epoch_done, cancelled = _run_epoch(run, epoch, state, cancel)
            # validation, and the best epoch's weights kept
            improved = _validate_and_keep_best(run, epoch, val_samples, state, best, record)
            # checkpoint
            state["history"].append(record)
            state.update(epoch=epoch + 1 if epoch_done else epoch, labels=model.labels, mean=model.mean,
                         elapsed_s=prior_seconds + time.time() - started)
            if rank == 0:
                save_checkpoint(ckpt, run.net, run.optimizer, state)
            events.emit("epoch", **record, checkpoint=str(ckpt), improved=improved,
                        elapsed_s=round(time.time() - started, 1))
            # fewer epochs when the planned ones would not fit in the time budget
            epoch_seconds.append(time.time() - t_epoch)
            if cfg.time_budget_s and epoch_done:
                _fit_to_time_budget(run, planned_epochs, first_epoch, epoch_seconds, time.time() - started)
            # early stopping
            since_best = epoch + 1 - state.get("best_epoch", epoch + 1)
            if run.recipe.patience and since_best >= run.recipe.patience:
                events.emit("early_stop", epoch=epoch + 1, best_epoch=state.get("best_epoch"))
                break
            if world > 1:
                dist.barrier()
    if rank != 0:
        return None
    run.net.load_state_dict(best.weights)
    if new_labels and cfg.new_labels == "fit" and not cancelled and state["step"] > 0:
        _fit_new_labels(model, train_samples, new_labels, device, bf16, cfg.seed, events, "after training",
                        final=True)
    return _finish(cfg, model, run.net, run.recipe, state, val_samples, best.scores, events, cancelled, started)


def _set_up_device(cfg: TrainConfig, local_rank: int) -> tuple[torch.device, bool]:
    """The device to train on (under torchrun, this process's GPU) and whether to compute in bf16."""
    device = pick_device(cfg.device)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        configure_cpu()
    return device, use_bf16(device, cfg.bf16)


def _load_data(cfg: TrainConfig) -> tuple[list[Sample], list[Sample]]:
    """The training and held-out samples: ``--val-data``, else a part of ``--data`` held out."""
    samples = load_samples(cfg.data)
    if cfg.val_data:
        train_samples, val_samples = samples, load_samples(cfg.val_data)
    else:
        train_samples, val_samples = split_samples(samples, cfg.val_fraction)
    if not train_samples:
        raise ValueError(f"no labelled images found in {cfg.data}")
    return train_samples, val_samples


def _make_loader(cfg: TrainConfig, dataset: TrainingSet, recipe: Recipe, device: torch.device, rank: int,
                 world: int) -> tuple[DataLoader, object]:
    """The DataLoader of one process's share of the batches, and the sampler to tell each epoch."""
    sampler = (torch.utils.data.distributed.DistributedSampler(dataset, world, rank, shuffle=True, seed=cfg.seed)
               if world > 1 else None)
    workers = cfg.workers if cfg.workers is not None else min(4, max(1, (os.cpu_count() or 2) - 1))
    per_rank_batch = max(1, recipe.batch_size // world)
    drop_last = len(dataset) > per_rank_batch
    # not persistent: each epoch's workers start from the dataset with its new epoch number, so
    # crops and flips differ from epoch to epoch
    common = {"num_workers": workers, "persistent_workers": False, "pin_memory": device.type == "cuda",
              "generator": torch.Generator().manual_seed(cfg.seed)}
    if cfg.short_sides:
        indices = sampler or torch.utils.data.RandomSampler(dataset, generator=common["generator"])
        sampler = ScaledBatches(indices, per_rank_batch, cfg.short_sides, seed=cfg.seed, drop_last=drop_last)
        return DataLoader(dataset, batch_sampler=sampler, **common), sampler
    loader = DataLoader(dataset, batch_size=per_rank_batch, shuffle=sampler is None, sampler=sampler,
                        drop_last=drop_last, **common)
    return loader, sampler


def _set_up_run(cfg: TrainConfig, model: TaggerModel, new_labels: list[str], train_samples: list[Sample],
                recipe: Recipe, device: torch.device, bf16: bool, rank: int, world: int, events: Events) -> _Run:
    net = model.net.to(device, memory_format=torch.channels_last)
    dataset = TrainingSet(train_samples, model.labels, seed=cfg.seed)
    loader, sampler = _make_loader(cfg, dataset, recipe, device, rank, world)
    optimizer = make_optimizer(net, recipe)
    anchored = anchors(net, len(model.labels) - len(new_labels)) if cfg.init and recipe.anchor > 0 else []
    ddp_net = torch.nn.parallel.DistributedDataParallel(net) if world > 1 else net
    steps_per_epoch = len(loader)
    return _Run(cfg, recipe, model, net, ddp_net, optimizer, loader, sampler, anchored, device, bf16, rank, world,
                events, steps_per_epoch, planned_steps(recipe.epochs, steps_per_epoch, cfg.max_steps))


def _run_epoch(run: _Run, epoch: int, state: dict, cancel: CancelFlag) -> tuple[dict, bool, bool]:
    """One pass over the loader (or until the last step, or a cancel): the epoch's record, whether
    it went through the whole loader, and whether it was cancelled."""
    cfg, recipe, optimizer = run.cfg, run.recipe, run.optimizer
    run.loader.dataset.epoch = epoch
    if run.sampler is not None:
        run.sampler.set_epoch(epoch)
    run.ddp_net.train()
    if recipe.norm_stats == "frozen":
        freeze_norm_stats(run.net)
    t_epoch, seen, loss_sum, loss_n = time.time(), 0, 0.0, 0
    t_report = time.time()
    cancelled = False
    for i, (images, targets) in enumerate(run.loader):
        x = to_tensor(images, run.model.mean).to(run.device, non_blocking=True)
        targets = targets.to(run.device)
        set_rates(optimizer, recipe, schedule_factor(recipe, state["step"], run.total_steps))
        with autocast(run.device, run.bf16):
            logits = run.ddp_net(x)
        loss, skipped = multilabel_softmax_loss(logits, targets)
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"training diverged: the loss became {loss.item()} at step {state['step'] + 1} (epoch {epoch + 1}); "
                f"{cfg.out} was not written. Try a lower --lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if run.anchored:
            pull_toward_start(run.anchored, optimizer.param_groups[0]["lr"] * recipe.anchor)
        state["step"] += 1
        seen += len(images)
        state["skipped_unlabelled"] += skipped
        loss_sum += loss.item() * len(images)
        loss_n += len(images)
        stop_now = cancel.set or state["step"] >= run.total_steps
        if run.world > 1:
            flag = torch.tensor([int(stop_now)])
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            stop_now = bool(flag.item())
        now = time.time()
        if now - t_report > 1.0 or i + 1 == run.steps_per_epoch or stop_now:
            rate = seen * run.world / max(1e-6, now - t_epoch)
            remaining = (run.total_steps - state["step"]) * recipe.batch_size / max(rate, 1e-6)
            run.events.emit("step", epoch=epoch + 1, epochs=recipe.epochs, step=state["step"],
                            total_steps=run.total_steps, step_in_epoch=i + 1, steps_per_epoch=run.steps_per_epoch,
                            loss=loss_sum / loss_n, images_per_s=round(rate, 1), eta_s=round(remaining, 1),
                            lr=optimizer.param_groups[0]["lr"])
            t_report = now
        if stop_now:
            cancelled = cancel.set
            break
    epoch_done = not cancelled and (i + 1 == run.steps_per_epoch)
    record = {"epoch": epoch + 1, "step": state["step"], "train_loss": loss_sum / max(1, loss_n),
              "images_per_s": round(seen * run.world / max(1e-6, time.time() - t_epoch), 1),
              "seconds": round(time.time() - t_epoch, 1)}
    return record, epoch_done, cancelled


def _validate_and_keep_best(run: _Run, epoch: int, val_samples: list[Sample], state: dict, best: _Best,
                            record: dict) -> bool:
    """Score the held-out images (rank 0), add them to ``record`` and keep the weights in ``best``
    if this epoch is the best so far (or there are too few held-out images to judge by: then the
    last epoch is kept). Returns whether it improved."""
    improved = True
    scores = None
    if run.rank == 0 and val_samples:
        scores = validation_scores(TaggerModel(run.net, run.model.card), val_samples, run.cfg.device, run.cfg.bf16)
        metrics, _ = evaluate_scores(scores["single"], scores["truth"], "global")
        record["val"] = metrics
        key = (metrics["accuracy"], metrics["mAP"])
        improved = (state["best"] is None or key > tuple(state["best"])
                    or len(scores["truth"]) < MIN_IMAGES_TO_JUDGE)
        if improved:
            state["best"] = list(key)
            state["best_epoch"] = epoch + 1
    if run.rank == 0 and improved:
        best.weights, best.scores = _copy_weights(run.net), scores
    return improved


def _fit_to_time_budget(run: _Run, planned_epochs: int, first_epoch: int, epoch_seconds: list[float],
                        elapsed_s: float) -> None:
    """Plan the epochs again so that the run ends within ``--time-budget``; the schedule follows."""
    fits = epochs_within_budget(planned_epochs, epoch_seconds, elapsed_s, run.cfg.time_budget_s) + first_epoch
    if fits != run.recipe.epochs:
        run.recipe = replace(run.recipe, epochs=fits)
        run.total_steps = planned_steps(fits, run.steps_per_epoch, run.cfg.max_steps)
        run.events.emit("time_budget", epochs=fits, total_steps=run.total_steps, budget_s=run.cfg.time_budget_s)


def _copy_weights(net: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


MEASURED_STEPS = 20  # steps of a frozen fine-tune timed before their rate replaces the trial's in the ETA
TRIAL_STEPS = 10     # trial steps timed (the first left out) when the trunk has read its first images


def _train_frozen(cfg: TrainConfig, model: TaggerModel, new_labels: list[str], train_samples: list[Sample],
                  val_samples: list[Sample], recipe: Recipe, device: torch.device, bf16: bool, events: Events,
                  started: float, first_fit: tuple[float, list[int]]) -> TaggerModel:
    """A fine-tune of the head (or the last block) on the frozen front's maps, computed once
    (finetune.py): ``recipe.epochs`` passes over the views of the training images. After each epoch
    the held-out images are scored as prediction scores them (their front's maps are computed once
    too) and a checkpoint is written, which ``--resume`` continues from. Every step event's ETA
    counts all that is left: maps, steps, epoch ends, and the work after the last step."""
    method = FrozenMethod(part=recipe.learns, lr=recipe.lr, anchor=recipe.anchor, batch_size=recipe.batch_size,
                          weight_decay=recipe.weight_decay, norm_stats=recipe.norm_stats,
                          distill=recipe.distill, distill_over="all")
    net = model.net.to(device)
    start = trainable_start(net, method.part)
    steps_per_epoch = max(1, -(-len(train_samples) * method.views_per_image // method.batch_size))
    method.steps = recipe.epochs * steps_per_epoch
    if cfg.max_steps:
        method.steps = min(method.steps, cfg.max_steps)
    replay_file, replay = _replay_for(cfg, model, start, events)
    method.replay_weight = cfg.replay_weight if replay is not None else 0.0
    parent = copy.deepcopy(net) if new_labels and cfg.new_labels == "cut" else None
    trainer = FrozenTrainer(net, start, method, len(model.labels) - len(new_labels), seed=cfg.seed, replay=replay)
    ckpt = checkpoint_dir(Path(cfg.out)) / "last.safetensors"
    state = {"epoch": 0, "step": 0, "best": None, "history": [], "learns": method.part,
             "new_label_fit_s": first_fit[0], "new_label_images": first_fit[1], "device": device.type,
             "replay": ({"file": str(replay_file), "crops": len(replay[0]), "weight": method.replay_weight}
                        if replay is not None else None)}
    if cfg.resume:
        state = _resume(ckpt, net, trainer.optimizer, model, recipe, events)
        trainer.restore(state["trainer"])
    prior_seconds = state.get("elapsed_s", 0.0)
    events.emit("start", train_images=len(train_samples), val_images=len(val_samples), labels=len(model.labels),
                epochs=recipe.epochs, steps_per_epoch=steps_per_epoch, batch_size=recipe.batch_size,
                recipe=asdict(recipe), device=str(device), bf16=False, world_size=1, init=cfg.init, out=str(cfg.out))
    to_train = method.steps > trainer.step
    held_out = (HeldOutMaps(net, start, model.mean, PredictConfig.from_dict(model.card.get("prediction")),
                            val_samples, device) if val_samples and to_train else None)
    truth = held_out.truth(model.labels) if held_out else None
    refit = (state["new_label_fit_s"] * final_fit_cost(NEW_LABEL_FOLDS, state.get("new_label_images", []))
             if new_labels and cfg.new_labels == "fit" else 0.0)
    left = RemainingWork(steps=method.steps - trainer.step,
                         stepping=MeasuredRate(trust_after=min(MEASURED_STEPS, method.steps // 10)),
                         epoch_ends=epoch_ends_after(trainer.step, method.steps, steps_per_epoch), after_steps=refit)
    read_so_far = {"images": 0, "time": time.time()}
    trials = MeasuredRate()  # trial steps while the trunk reads: their recent rate is the steps' guess

    def read(done: int, total: int, views) -> None:
        now = time.time()
        left.reading.add(done - read_so_far["images"], now - read_so_far["time"])
        left.images = total - done
        if views.maps and trials.measured:
            # one trial step after each chunk: a machine whose load changes while the trunk reads
            # runs the steps at the rate it has by then, not the one it had at the first chunk
            with trainer.threads():
                trials.add(1, trainer.trial_seconds(views, steps=1))
        elif views.maps:
            # trial steps, an epoch end's scoring and the work of the end, timed, give the later
            # phases their first estimates
            with trainer.threads():
                trials.add(TRIAL_STEPS - 1, (TRIAL_STEPS - 1) * trainer.trial_seconds(views, steps=TRIAL_STEPS))
                t_val = time.time()
                if held_out:
                    held_out.scores(net)
                left.ending.guess = time.time() - t_val
            left.after_steps = refit + _end_seconds(model, held_out, cfg, trainer, ckpt)
        left.stepping.guess = trials.seconds_per_unit()
        read_so_far.update(images=done, time=time.time())
        events.emit("frozen_features", part=method.part, images=total, images_done=done, views=len(views.maps),
                    seconds=round(time.time() - t_read, 1), eta_s=round(left.seconds(), 1), eta_parts=_rounded(left))

    t_read = time.time()
    index = {lab: i for i, lab in enumerate(model.labels)}
    views = training_views(net, start, model.mean, train_samples if to_train else [], index, method, device,
                           on_images=read)
    left.images = 0
    state["skipped_unlabelled"] = int((views.targets.sum(1) == 0).sum())
    best_state, best_scores = None, None
    loss_sum, loss_n, t_report, t_saved = 0.0, 0, 0.0, time.time()
    cancelled = False
    with CancelFlag() as cancel, trainer.threads():
        while trainer.step < method.steps and views.maps:
            t_step = time.time()
            loss = trainer.train_step(views)
            step, now = trainer.step, time.time()
            loss_sum, loss_n = loss_sum + loss, loss_n + 1
            epoch, in_epoch = (step - 1) // steps_per_epoch + 1, (step - 1) % steps_per_epoch + 1
            over_budget = cfg.time_budget_s is not None and now - started > cfg.time_budget_s
            cancelled = cancel.set
            stop = cancelled or over_budget
            epoch_end = in_epoch == steps_per_epoch or step == method.steps or stop
            left.steps = method.steps - step
            left.epoch_ends = epoch_ends_after(step, method.steps, steps_per_epoch) + int(epoch_end)
            per_step = left.stepping.seconds_per_unit()
            if now - t_report > 0.5 or epoch_end:
                events.emit("step", epoch=epoch, epochs=recipe.epochs, step=step, total_steps=method.steps,
                            step_in_epoch=in_epoch, steps_per_epoch=steps_per_epoch, loss=loss_sum / loss_n,
                            images_per_s=round(method.batch_size / max(per_step, 1e-6), 1),
                            eta_s=round(left.seconds(), 1), eta_parts=_rounded(left),
                            lr=trainer.optimizer.param_groups[0]["lr"])
                t_report = now
            t_end = time.time()
            if step > 1:  # the first step pays one-off set-up: the rate is that of the steps after it
                left.stepping.add(1, t_end - t_step)
            if epoch_end:
                record = {"epoch": epoch, "step": step, "train_loss": loss_sum / loss_n,
                          "images_per_s": round(method.batch_size / max(per_step, 1e-6), 1),
                          "seconds": round(per_step * in_epoch, 1)}
                improved = True
                if held_out:
                    scores = held_out.scores(net)
                    record["val"], _ = evaluate_scores(scores, truth, "global")
                    key = (record["val"]["accuracy"], record["val"]["mAP"])
                    improved = (state["best"] is None or key > tuple(state["best"])
                                or len(truth) < MIN_IMAGES_TO_JUDGE)
                    if improved:
                        state["best"], state["best_epoch"] = list(key), epoch
                        best_scores = {"single": scores, "truth": truth}
                if improved:
                    best_state = _copy_weights(net)
                state["history"].append(record)
                state.update(epoch=epoch if in_epoch == steps_per_epoch else epoch - 1, step=step,
                             labels=model.labels, mean=model.mean, trainer=trainer.state(),
                             elapsed_s=prior_seconds + time.time() - started)
                # an epoch of a few steps takes a second: a checkpoint every 10 s is enough to resume from
                saved = stop or step == method.steps or time.time() - t_saved > 10
                if saved:
                    save_checkpoint(ckpt, net, trainer.optimizer, state)
                    t_saved = time.time()
                events.emit("epoch", **record, improved=improved, elapsed_s=round(time.time() - started, 1),
                            **({"checkpoint": str(ckpt)} if saved else {}))
                loss_sum, loss_n = 0.0, 0
                left.ending.add(1, time.time() - t_end)
                left.epoch_ends -= 1
            if over_budget:
                events.emit("time_budget", epochs=epoch, total_steps=step, budget_s=cfg.time_budget_s)
            if stop:
                break
    trainer.close()
    if best_state is not None:
        net.load_state_dict(best_state)
    state.update(best_epoch=state.get("best_epoch", state["epoch"]),
                 elapsed_s=prior_seconds + time.time() - started)
    if new_labels and cfg.new_labels in ("fit", "cut") and not cancelled and trainer.step > 0:
        if cfg.new_labels == "fit":
            _fit_new_labels(model, train_samples, new_labels, device, bf16, cfg.seed, events, "after training",
                            final=True)
        else:
            state["label_scales"] = _cut_new_labels(model, parent, start, method, train_samples, views, new_labels,
                                                    events, cfg.seed, replay)
        if held_out:
            best_scores = {"single": held_out.scores(net), "truth": truth}
    model = _finish(cfg, model, net, recipe, state, val_samples, best_scores, events, cancelled, started)
    if replay_file is not None and replay_path_for(cfg.out).resolve() != replay_file.resolve():
        # the child's trunk is its parent's: so is its replay set, for the fine-tunes of the child
        save_replay(load_replay(replay_file), replay_path_for(cfg.out))
    return model


def _end_seconds(model: TaggerModel, held_out: HeldOutMaps | None, cfg: TrainConfig, trainer: FrozenTrainer,
                 ckpt: Path) -> float:
    """What the work after the last step will take, besides the new labels' second fit: the 10-crop
    baseline on the held-out images (its one-off set-up and one image, then a second image: the
    cost of each) and the last checkpoint and the model file (a checkpoint written beside it now,
    timed, then deleted)."""
    seconds = 0.0
    if held_out and held_out.samples:
        t0 = time.time()
        validation_scores(model, held_out.samples[:1], cfg.device, cfg.bf16, baseline=True, seed=cfg.seed,
                          single=False)
        t1 = time.time()
        validation_scores(model, held_out.samples[1:2], cfg.device, cfg.bf16, baseline=True, seed=cfg.seed,
                          single=False)
        t2 = time.time()
        per_image = t2 - t1 if len(held_out.samples) > 1 else t1 - t0
        seconds += (t1 - t0) + per_image * (len(held_out.samples) - 1)
    t3 = time.time()
    timing = ckpt.with_name("timing.safetensors")
    save_checkpoint(timing, model.net, trainer.optimizer, {})
    seconds += 2 * (time.time() - t3)
    timing.unlink(missing_ok=True)
    return seconds


def _rounded(left: RemainingWork) -> dict[str, float]:
    return {k: round(v, 1) for k, v in left.parts().items()}


def _resume(path: Path, net: nn.Module, optimizer: torch.optim.Optimizer, model: TaggerModel, recipe: Recipe,
            events: Events) -> dict:
    """Load OUT.ckpt/last.safetensors into ``net`` and ``optimizer`` after checking that it is a
    checkpoint of this run (the same labels, the same part learning); returns its loop state."""
    if not path.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint at {path}")
    state = checkpoint_state(path)
    if state.get("labels") != model.labels:
        raise ValueError(f"--resume: {path} was trained on other labels than this data")
    learnt = state.get("learns", "all")
    if learnt != recipe.learns:
        raise ValueError(f"--resume: {path} is a checkpoint of a fine-tune that learns {learnt}, not {recipe.learns}: "
                         f"resume it with --learn {learnt}")
    state = load_checkpoint(path, net, optimizer)
    model.card["mean"] = state["mean"]
    events.emit("resumed", checkpoint=str(path), epoch=state["epoch"], step=state["step"])
    return state


def _replay_for(cfg: TrainConfig, model: TaggerModel, start: int, events: Events
                ) -> tuple[Path | None, tuple[torch.Tensor, torch.Tensor] | None]:
    """The replay file and its (features, targets for the model's labels) for a head fine-tune, or
    (None, None): off, none beside the --init model, or another part learns. A file named on the
    command line that cannot be used is an error; the automatic one is skipped with a warning."""
    if not cfg.init or cfg.replay == "none" or cfg.replay_weight <= 0:
        return None, None
    automatic = cfg.replay == "auto"
    path = replay_path_for(cfg.init) if automatic else Path(cfg.replay)
    if automatic and not path.is_file():
        return None, None
    if start != len(model.net.trunk):
        if automatic:
            return None, None
        raise ValueError(f"--replay {path}: only a fine-tune of the head (--learn head or last) can replay")
    try:
        replay = load_replay(path, model.net)
        targets = replay.targets_for(model.labels)
    except ReplayError as e:
        if not automatic:
            raise
        events.emit("warning", message=f"{e}: fine-tuning without replay")
        return None, None
    events.emit("replay", file=str(path), crops=len(replay.features))
    return path, (replay.features, targets)


def _cut_new_labels(model: TaggerModel, parent: nn.Module, start: int, method: FrozenMethod,
                    samples: list[Sample], views, new: list[str], events: Events, seed: int,
                    replay: tuple[torch.Tensor, torch.Tensor] | None) -> list[float]:
    """Each new label's own cut (``--new-labels cut``): the factor on its score found by cross-validating
    the fine-tune. Returns the factors of every label (1 for the old ones), for the card's threshold."""
    t0 = time.time()
    threshold = Threshold.from_dict(model.card.get("threshold", {}), len(model.labels))
    old = len(model.labels) - len(new)
    scales = cross_validated_label_scales(parent, start, model.mean,
                                          PredictConfig.from_dict(model.card.get("prediction")), threshold.select,
                                          samples, views, method, old, NEW_LABEL_FOLDS, seed=seed, replay=replay)
    events.emit("new_labels_cut", scales={lab: round(float(v), 3) for lab, v in zip(new, scales, strict=True)},
                seconds=round(time.time() - t0, 1))
    return [*(threshold.label_scales[:old] or [1.0] * old), *(float(v) for v in scales)]


def _fit_new_labels(model: TaggerModel, samples: list[Sample], new: list[str], device: torch.device, bf16: bool,
                    seed: int, events: Events, when: str, final: bool) -> tuple[float, list[int]]:
    """Fit the new labels' rows (newlabels.py) and report it; the ``final`` fit also places their cut
    by cross-validation. Returns the seconds it took and the images each label was fitted on."""
    t0 = time.time()
    report = fit_new_rows(model, samples, new, device=device.type, bf16=bf16, seed=seed,
                          folds=NEW_LABEL_FOLDS if final else 0)
    events.emit("new_labels_fitted", when=when, labels=report, seconds=round(time.time() - t0, 1))
    unseen = [lab for lab, r in report.items() if r["images"] == 0]
    if unseen and when == "before training":
        them = "it" if len(unseen) == 1 else "them"
        events.emit("warning", message=f"no readable training image has {', '.join(unseen)} among those the fit "
                    f"of new labels used (at most {NEW_LABEL_FIT_IMAGES}): the model gains {them} but will not "
                    f"predict {them} until more images with {them} are confirmed")
    return time.time() - t0, [r["images"] for r in report.values()]


def _finish(cfg: TrainConfig, model: TaggerModel, net, recipe: Recipe, state: dict, val_samples: list[Sample],
            best_scores: dict | None, events: Events, cancelled: bool, started: float) -> TaggerModel:
    """Fit the thresholds on the validation part, fill the card, write the model file.
    ``best_scores`` are the best epoch's single-pass validation scores, when that epoch was validated."""
    net.eval()
    model.net = net.cpu()
    card = dict(model.card)
    new_label_choice = card.pop("new_labels", None)
    card.setdefault("prediction", PredictConfig().to_dict())
    metrics: dict = {}
    threshold_source = "fitted on the held-out images" if val_samples else "none fitted (no held-out images)"
    judged = 0  # readable held-out images: what the epoch choice and the threshold are judged on
    if val_samples:
        scores = dict(best_scores or {})
        if best_scores is None or not cancelled:
            scores.update(validation_scores(model, val_samples, cfg.device, cfg.bf16, baseline=not cancelled,
                                            seed=cfg.seed, single=best_scores is None))
        judged = len(scores["truth"])
        kind = threshold_kind(cfg.threshold, judged, card.get("threshold") if cfg.init else None)
        # the new labels' own cuts: this run's, else those the parent's threshold carries
        scales = state.get("label_scales") or (Threshold.from_dict(card["threshold"], len(model.labels)).label_scales
                                               if cfg.init and "threshold" in card else [])
        metrics["validation_single_pass"], threshold = evaluate_scores(scores["single"], scores["truth"], kind,
                                                                       scales)
        if cfg.init and judged < MIN_IMAGES_TO_JUDGE:
            # a threshold fitted on a handful of held-out images is noise: keep the parent's
            kept = Threshold.from_dict(card["threshold"], len(model.labels))
            kept.label_scales = scales
            card["threshold"] = kept.to_dict()
            metrics["validation_single_pass"] = set_metrics(kept.select(scores["single"]), scores["truth"])
            metrics["validation_single_pass"]["mAP"] = mean_average_precision(scores["single"], scores["truth"])
            threshold_source = f"kept from {cfg.init} (fewer than {MIN_IMAGES_TO_JUDGE} readable held-out images)"
        else:
            card["threshold"] = threshold.to_dict()
            for key in ("summed_threshold", "single_pass"):  # the parent's, for weights this run changed
                card.pop(key, None)
        if "baseline" in scores:
            metrics["validation_ten_crop"], base_t = evaluate_scores(scores["baseline"], scores["truth"], kind)
            card["baseline_threshold"] = base_t.to_dict()
    previous = card.get("provenance") if cfg.init else None
    if cfg.init and "training_data" in card:  # it describes the parent's data: kept with the parent's provenance
        previous = {**(previous or {}), "training_data": card.pop("training_data")}
    card["provenance"] = {
        "data": [str(p) for p in cfg.data], "recipe": asdict(recipe), "arch": card["arch"].get("name"),
        "init": cfg.init, "device": state.get("device"),
        "epochs_run": state["epoch"], "steps": state["step"], "best_epoch": state.get("best_epoch"),
        "kept": ("the best epoch on the held-out images" if judged >= MIN_IMAGES_TO_JUDGE
                 else f"the last epoch (fewer than {MIN_IMAGES_TO_JUDGE} readable held-out images)"),
        "val_fraction": cfg.val_fraction, "short_sides": list(cfg.short_sides or (CROP, CROP)),
        "train_seconds": round(state.get("elapsed_s", time.time() - started), 1),
        "skipped_unlabelled": state["skipped_unlabelled"], "cancelled": cancelled, "threshold": threshold_source,
        "history": state["history"], **({"parent": previous} if previous else {}),
        **({"replay": state["replay"]} if state.get("replay") else {}),
        **({"new_labels": new_label_choice} if new_label_choice else {}),
    }
    card["metrics"] = metrics
    card["created"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    if cfg.init:
        card["name"] = Path(cfg.out).stem  # not the parent's: the library tells models apart by card
    if cfg.name:
        card["name"] = cfg.name
    model.card = card
    save_model(model, cfg.out)
    events.emit("cancelled" if cancelled else "done", model=str(cfg.out), metrics=metrics,
                seconds=round(time.time() - started, 1),
                checkpoint=str(checkpoint_dir(Path(cfg.out)) / "last.safetensors"))
    return model

