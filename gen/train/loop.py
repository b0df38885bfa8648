"""The training loop, readable top to bottom, shared by every trained model.

Per step: a batch -> the task's loss (gen.train.diffusion: x_t = q_sample(x_0, t, eps),
weighted MSE of the denoiser's prediction against training_target; gen.train.vae:
reconstruction + KL) -> AdamW step (warm-up, clipping) -> EMA update.

Runs are exactly resumable: the data order is a function of the step (sample k of the
run is dataset index perm_epoch[k mod N]), so is the noise (each rank reseeds its
generator from (seed, rank, step)), and model, EMA, optimiser and LR schedule are restored
from the checkpoint. A step is all or nothing: Ctrl-C during the forward or backward drops
it, and one arriving during the update is held until the update is complete. Under
torchrun (WORLD_SIZE > 1) it trains with DistributedDataParallel; rank 0 logs and saves.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from gen.errors import GenError
from gen.lock import LOCK_NAME
from gen.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from gen.train import fast, report
from gen.train.config import TrainConfig
from gen.train.ema import EMA
from gen.train.diffusion import TextToImageModel  # noqa: F401  (re-exported: tests patch it here)

logger = logging.getLogger(__name__)


def sample_indices(n: int, seed: int, start: int, count: int) -> list[int]:
    """Dataset indices of run samples start .. start+count-1: a fresh permutation per epoch."""
    out, k = [], start
    while len(out) < count:
        epoch, pos = divmod(k, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100003 + epoch))
        take = min(count - len(out), n - pos)
        out += perm[pos:pos + take].tolist()
        k += take
    return out


class _Batches(torch.utils.data.Sampler):
    """Batch sampler: batch `step` of this rank, from `start` on, forever."""

    def __init__(self, n, seed, start, batch, rank, world):
        self.n, self.seed, self.start, self.batch, self.rank, self.world = n, seed, start, batch, rank, world

    def __iter__(self):
        step = self.start
        while True:
            first = step * self.batch * self.world + self.rank * self.batch
            yield sample_indices(self.n, self.seed, first, self.batch)
            step += 1


def noise_seed(seed: int, rank: int, step: int, micro: int = 0) -> int:
    """The seed of what rank `rank` draws at optimiser step `step` (t, eps, text dropout),
    for its micro-batch `micro` under gradient accumulation."""
    key = f"{seed}/{rank}/{step}" + (f"/{micro}" if micro else "")
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def micro_batches(batch: dict, parts: int) -> list[dict]:
    """A collated batch cut into `parts` equal consecutive micro-batches."""
    if parts == 1:
        return [batch]
    n = next(len(v) for v in batch.values() if hasattr(v, "__len__"))
    size = n // parts
    return [{k: v[i * size:(i + 1) * size] for k, v in batch.items()} for i in range(parts)]


@contextmanager
def hold_interrupts():
    """Deliver a Ctrl-C that arrives inside the block at its end, so that the parameter
    update, LR schedule, EMA and step counter move together or not at all."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is None:
        yield  # handlers can only be swapped in Python's main thread, and restored if Python set them
        return
    held = []
    previous = signal.signal(signal.SIGINT, lambda *frame: held.append(frame))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if held and callable(previous):
            previous(*held[0])


def tensorboard_writer(run: Path):
    """A TensorBoard writer for RUN/tensorboard when the tensorboard package is installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run / "tensorboard"))


def lr_lambda(cfg: TrainConfig):
    def factor(step: int) -> float:
        if step < cfg.warmup:
            return (step + 1) / cfg.warmup
        if cfg.lr_schedule == "cosine":
            progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
            return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        return 1.0

    return factor


class Indexed(torch.utils.data.Dataset):
    """Items carry their dataset index (for latent caches)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        return {**self.dataset[i], "index": i}


def make_task(cfg: TrainConfig, device: torch.device):
    """What is trained: a text-to-image/video denoiser, an autoencoder (kind "vae") or a
    super-resolution stage (kind "sr")."""
    if cfg.kind == "vae":
        from gen.train.vae import VAETask

        return VAETask(cfg, device)
    if cfg.kind == "sr":
        from gen.train.sr import SRTask

        return SRTask(cfg, device)
    from gen.train.diffusion import DiffusionTask

    return DiffusionTask(cfg, device)


# What a run writes before its first checkpoint: a folder holding only these (and no
# logged step) is a run that failed at its start, and gen's to reuse.
START_FILES = ("config.json", "log.jsonl", "tensorboard", "checkpoints", "compile-cache", LOCK_NAME)


def failed_start(run: Path) -> bool:
    """Whether `run` holds nothing but what a run that never trained a step leaves."""
    entries = list(run.iterdir())
    if any(p.name not in START_FILES for p in entries):
        return False
    log = run / "log.jsonl"
    checkpoints = run / "checkpoints"
    return ((not log.exists() or (log.is_file() and log.stat().st_size == 0))
            and (not checkpoints.exists() or (checkpoints.is_dir() and not any(checkpoints.iterdir()))))


def train(cfg: TrainConfig, resume: bool = False, device: str = "auto", progress: bool = True,
          given: dict | None = None) -> Path:
    """Train (or continue) the run in cfg.out; returns the exported folder (pipeline or VAE).

    `given` (the CLI's explicitly set options): on resume, these are checked against the
    run's own config (gen.train.config.resume_config); without it the run's config is used
    with cfg's say in how it runs (gen.train.config.RUNTIME: steps, compile, threads, ...).
    The run folder is locked for the whole run; a folder this call created is removed again
    if the run fails before its first checkpoint."""
    from gen.lock import output_lock

    cfg.validate()
    run = Path(cfg.out)
    if run.exists() and not run.is_dir():
        raise GenError(f"--out {run} exists and is a file; give a folder path")
    if int(os.environ.get("RANK", "0")) != 0:
        return _train(cfg, resume, device, progress, given)
    created, failed_fresh = not run.exists(), False
    try:
        with output_lock(run):
            try:
                return _train(cfg, resume, device, progress, given)
            except BaseException:  # a folder this call made, with nothing to resume: leave no trace
                failed_fresh = created and latest_checkpoint(run) is None
                raise
    finally:
        if failed_fresh:
            import shutil

            shutil.rmtree(run, ignore_errors=True)


def _read_state(checkpoint: Path) -> dict:
    from gen.errors import read_json

    state = read_json(checkpoint / "state.json", "--resume: checkpoint state",
                      "the checkpoint is damaged; delete it to resume from the one before")
    if not isinstance(state, dict) or not isinstance(state.get("config"), dict):
        raise GenError(f"--resume: {checkpoint / 'state.json'} holds no run config; the checkpoint is damaged")
    return state


def _truncate_log(log: Path, step: int) -> None:
    """Keep the log lines up to `step` (the checkpoint resumed from): the steps after it are
    trained again and logged again, so a crash leaves no step twice."""
    if not log.is_file():
        return
    kept = []
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            continue  # a line cut by the crash
    tmp = log.with_name(log.name + ".partial")
    tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    os.replace(tmp, log)


def _train(cfg: TrainConfig, resume: bool, device: str, progress: bool, given: dict | None) -> Path:
    from tqdm import tqdm

    from gen.data import collate
    from gen.runtime import keep_freed_memory, resolve_device
    from gen.train.config import RUNTIME, resume_config

    run = Path(cfg.out)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    dev = resolve_device(device)
    fast.threads(cfg.threads)
    if dev.type == "cpu":
        keep_freed_memory()
    if world > 1:
        if dev.type == "cuda":
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(dev)
        if not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if dev.type == "cuda" else "gloo")

    checkpoint = latest_checkpoint(run) if resume else None
    if resume and checkpoint is None:
        raise GenError(f"--resume: no checkpoint in {run}/checkpoints to continue from")
    if not resume and run.exists() and not failed_start(run):
        raise GenError(f"--out {run} exists and is not empty; pass --resume to continue it or choose a new folder")
    if world > 1:  # every rank has looked at --out before rank 0 writes to it
        torch.distributed.barrier()
    if checkpoint is not None:  # the run's own config wins over the command line's
        saved = _read_state(checkpoint)["config"]
        runtime = {name: getattr(cfg, name) for name in RUNTIME}  # how it runs: the caller's say (Python API)
        cfg = (resume_config(saved, given) if given is not None
               else TrainConfig.from_dict({**saved, **runtime})).validate()
    if cfg.batch % world:
        raise GenError(f"--batch {cfg.batch} must be divisible by the {world} processes")
    local_batch = cfg.batch // world
    if local_batch % cfg.accumulate:
        raise GenError(f"--accumulate {cfg.accumulate} must divide the batch each process takes ({local_batch}); "
                       f"each optimiser step is --accumulate micro-batches of {local_batch} / {cfg.accumulate}")

    task = make_task(cfg, dev)
    dataset, model = task.build()
    dataset = Indexed(dataset)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
    lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    ema = EMA(model, cfg.ema_decay)
    noise_gen = torch.Generator()
    amp = fast.mixed_precision(dev, cfg.bf16)
    scaler = torch.amp.GradScaler(dev.type, enabled=amp == torch.float16)  # fp16 needs its loss scaled
    step = load_checkpoint(checkpoint, model, ema, optimizer, lr_scheduler, scaler) if checkpoint else 0
    check_memory(task, model, dataset, local_batch // cfg.accumulate, dev,
                 autocast=torch.autocast(dev.type, dtype=amp or torch.bfloat16, enabled=amp is not None))
    if cfg.compile:  # after the memory check's batch-1 forward: compiled for the training batch only
        fast.compile_denoiser(model, run / "compile-cache")
    if rank == 0:
        run.mkdir(parents=True, exist_ok=True)
        if checkpoint is None:  # a fresh start (or a reused failed one): nothing logged yet
            (run / "log.jsonl").unlink(missing_ok=True)
        else:
            _truncate_log(run / "log.jsonl", step)
        tmp = run / "config.json.partial"
        tmp.write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        os.replace(tmp, run / "config.json")
    trained = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model

    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=_Batches(len(dataset), cfg.seed, step, local_batch, rank, world),
        collate_fn=collate, num_workers=cfg.workers, persistent_workers=cfg.workers > 0)
    autocast = torch.autocast(dev.type, dtype=amp or torch.bfloat16, enabled=amp is not None)

    def save(at: int) -> Path | None:
        if rank != 0:
            return None
        path = save_checkpoint(run, at, model, ema, optimizer, lr_scheduler, cfg.to_dict(), cfg.keep_checkpoints,
                               scaler)
        if log is not None and not log.closed:
            log.flush()
        report.plot_log(run / "log.jsonl", run / "loss.png")
        return path

    log = open(run / "log.jsonl", "a") if rank == 0 else None
    board = tensorboard_writer(run) if rank == 0 else None
    bar = tqdm(total=cfg.steps, initial=step, disable=not progress or rank != 0, unit="step", dynamic_ncols=True)
    stop = {"signal": False}
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.update(signal=True)) if rank == 0 else None
    tick, done_since = time.perf_counter(), 0
    deadline = time.perf_counter() + 60 * cfg.max_minutes if cfg.max_minutes else math.inf
    try:
        batches = iter(loader)
        while step < cfg.steps:
            batch = next(batches)
            parts = micro_batches(batch, cfg.accumulate)
            loss, metrics = 0.0, {}
            for k, part in enumerate(parts):  # gradients summed over micro-batches: the mean over the batch
                noise_gen.manual_seed(noise_seed(cfg.seed, rank, step, k))
                sync = k == len(parts) - 1 or world == 1
                with (contextlib.nullcontext() if sync else trained.no_sync()):
                    part_loss, part_metrics = task.loss(trained, part, noise_gen, autocast)
                    scaler.scale(part_loss / len(parts)).backward()
                loss = loss + part_loss.detach() / len(parts)
                for name, value in part_metrics.items():
                    metrics[name] = metrics.get(name, 0.0) + value / len(parts)
            scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            overflow = scaler.is_enabled() and torch.isfinite(loss) and not torch.isfinite(grad_norm)  # fp16: skip
            if not overflow and not (torch.isfinite(loss) and torch.isfinite(grad_norm)):  # all-reduced: all stop
                what = (f"the loss became {loss.item()}" if not torch.isfinite(loss)
                        else f"the gradient norm became {grad_norm.item()}")
                path = save(step) or run / "checkpoints"
                raise GenError(f"{what} at step {step + 1}; stopped. The last good state (step {step}) is saved "
                               f"in {path}. Try a lower --lr.")
            lr = optimizer.param_groups[0]["lr"]  # the rate this step uses
            with hold_interrupts():
                scaler.step(optimizer)  # fp16: skipped on an overflow, and the scale lowered
                scaler.update()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                ema.update(model)
                step += 1
            done_since += 1
            bar.update(1)
            if rank == 0 and (step % cfg.log_every == 0 or step == cfg.steps):
                now = time.perf_counter()
                rate = done_since / (now - tick)
                tick, done_since = now, 0
                record = {"step": step, "loss": loss.item(), **metrics, "grad_norm": grad_norm.item(),
                          "lr": lr, "steps_per_s": rate, "samples_per_s": rate * cfg.batch}
                log.write(json.dumps(record) + "\n")
                if board is not None:
                    for name, value in record.items():
                        if name != "step":
                            board.add_scalar(f"train/{name}", value, step)
                log.flush()
                bar.set_postfix(loss=f"{record['loss']:.4f}", samples_s=f"{record['samples_per_s']:.0f}")
            if rank == 0 and cfg.sample_every and step % cfg.sample_every == 0:
                task.sample(run / "samples" / f"step-{step:07d}.png", model, ema)
            if rank == 0 and cfg.snapshot_every and step % cfg.snapshot_every == 0:  # a learning curve's point
                task.export(run / "snapshots" / f"step-{step:07d}", model, ema)
            if cfg.ckpt_every and step % cfg.ckpt_every == 0 and step < cfg.steps:
                save(step)
            if stop["signal"]:
                raise KeyboardInterrupt
            over = torch.tensor(float(time.perf_counter() > deadline))
            if world > 1 and deadline < math.inf:  # every rank stops at the same step
                torch.distributed.all_reduce(over, op=torch.distributed.ReduceOp.MAX)
            if over.item():
                if rank == 0:
                    logger.info("stopping at step %d: --max-minutes %s reached", step, cfg.max_minutes)
                break
    except KeyboardInterrupt:
        path = save(step)
        if rank == 0:
            logger.warning("interrupted at step %d; saved %s. Continue with --resume.", step, path)
        raise
    finally:
        bar.close()
        if log is not None:
            log.close()
        if board is not None:
            board.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    save(step)
    exported = task.export(run, model, ema) if rank == 0 else run / task.export_name
    if rank == 0 and exported.is_dir():
        report.write_card(run, cfg.to_dict(), exported)
    if world > 1:
        torch.distributed.barrier()
    return exported


def _available_memory(device: torch.device) -> int | None:
    """Bytes free for this run on `device` (None: unknown)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None


def activation_bytes(task, model, dataset, autocast) -> int:
    """Bytes autograd keeps for one training sample: a forward at batch 1 whose saved
    tensors are counted (each storage once), then thrown away. RNG states are restored."""
    from gen.data import collate

    storages: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    global measuring
    cpu_state = torch.get_rng_state()
    measuring = True
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss, _ = task.loss(model, collate([dataset[0]]), torch.Generator().manual_seed(0), autocast)
        del loss
    finally:
        measuring = False
        torch.set_rng_state(cpu_state)
    return sum(storages.values())


measuring = False  # True during activation_bytes' forward (not a training step)


def check_memory(task, model, dataset, batch: int, device: torch.device, autocast) -> None:
    """Refuse a batch whose training step cannot fit in the memory free on `device`, before
    the first step: weights, gradients, AdamW moments and EMA (20 bytes a parameter), plus
    the activations of one sample, measured, times the batch (with a 25% margin)."""
    free = _available_memory(device)
    if free is None:
        return
    params = sum(p.numel() for p in model.parameters())
    fixed = 20 * params
    per_sample = activation_bytes(task, model, dataset, autocast)
    need = fixed + 1.25 * batch * per_sample
    if need > free:
        fits = max(0, int((free - fixed) / (1.25 * per_sample))) if per_sample else 0
        gib = 2**30
        raise GenError(f"--batch {batch} needs about {need / gib:.1f} GiB on {device} ({per_sample / 2**20:.1f} MiB "
                       f"of activations per sample, measured, plus {fixed / gib:.2f} GiB of weights and optimiser "
                       f"state) but {free / gib:.1f} GiB is free; use --batch {fits} or less"
                       + (" (or a smaller --size / --frames)" if fits < 1 else ""))
