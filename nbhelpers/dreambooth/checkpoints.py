"""Training checkpoints: small (trained parameters only), atomic, safe to read, and never fatal to a resume.

A checkpoint is the folder ``<output_dir>/checkpoints/checkpoint-<step>``:

- ``trained_parameters.safetensors``: only the parameters the optimizer updates (the LoRA adapters, or the
  whole UNet for full fine-tuning), never the frozen weights, which the base model already holds;
- ``training_state.safetensors``: the optimizer's, learning-rate schedule's and gradient scaler's states;
- ``rng_state_<process>.safetensors``: each process's random generators (Python, NumPy, torch, CUDA);
- ``run_state.json``: the step, the data order (epoch and batch within it), the settings a resume must share
  (mode, LoRA rank and targets, ...) and the names of the files above.

Nothing is pickled: tensors are safetensors and everything else JSON (:mod:`nbhelpers.training.state`), so reading
a checkpoint cannot run code, whoever made the folder (checkpoints are moved between machines, Colab and Drive).
accelerate's ``save_state`` is not used for this reason: its ``load_state`` unpickles the schedule and scaler
(``custom_checkpoint_*.pkl``) with ``torch.load(weights_only=False)``. Every part is read and checked against the
run before any is applied; a file the run did not write is named in the log and never opened.

Folders whose name is not ``checkpoint-<number>``, or without ``run_state.json``, are ignored (never read, never
deleted); so are, with a warning, the pickled checkpoints of earlier versions. A checkpoint that cannot be read
(damaged, tampered with, not what this run would write) is reported in one line and the one before it is used.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import broadcast_object_list
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from nbhelpers.atomic import atomic_folder, atomic_open, write_json_atomic
from nbhelpers.dreambooth.config import DreamBoothConfigError
from nbhelpers.training.state import UnreadableState, check_tensors, load_state_file, save_state_file

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
PARAMETERS_FILE = "trained_parameters.safetensors"
TRAINING_STATE_FILE = "training_state.safetensors"
STATE_FILE = "run_state.json"
FORMAT_VERSION = 2
#: the format of earlier versions: accelerate's save_state, whose schedule and scaler files are pickles
PICKLED_FORMAT_VERSION = 1
_NAME = re.compile(r"checkpoint-(\d+)")
#: settings a resumed run must share with its checkpoint: other values would load into a different model
MUST_MATCH = ("use_lora", "lora_rank", "lora_target_modules", "train_text_encoder", "model")


class CheckpointError(DreamBoothConfigError):
    """No checkpoint can be resumed, or one conflicts with the run's settings; the message says what to do."""


class UnreadableCheckpoint(Exception):
    """One checkpoint folder cannot be used (truncated, partly deleted, tampered with, not ours)."""


class PickledCheckpoint(UnreadableCheckpoint):
    """A checkpoint of an earlier nbhelpers, in accelerate's pickled format: never loaded, and not counted as a
    broken checkpoint of this run (a run whose only checkpoints are such starts fresh)."""


def rng_file(process_index: int) -> str:
    """The random generators' file of one process."""
    return f"rng_state_{process_index}.safetensors"


def checkpoint_files(num_processes: int) -> list[str]:
    """The files a checkpoint of a run with ``num_processes`` processes holds, besides ``run_state.json``."""
    return [PARAMETERS_FILE, TRAINING_STATE_FILE, *(rng_file(i) for i in range(num_processes))]


def checkpoint_folder(output_dir: str | os.PathLike[str]) -> Path:
    return Path(output_dir) / CHECKPOINTS


def list_checkpoints(output_dir: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """``[(step, folder), ...]`` of the folders named ``checkpoint-<step>``, oldest first; other names are
    ignored (a user's ``checkpoint-old`` is neither read nor deleted)."""
    folder = checkpoint_folder(output_dir)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _NAME.fullmatch(path.name)
        if match and path.is_dir():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(output_dir: str | os.PathLike[str]) -> tuple[int, Path] | None:
    """``(step, folder)`` of the newest checkpoint folder, or ``None`` (see :func:`list_checkpoints`)."""
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def read_run_state(folder: Path) -> dict[str, Any]:
    """The checkpoint's ``run_state.json``.

    Raises:
        UnreadableCheckpoint: missing, not JSON, of the pickled format of earlier versions, or of another format.
    """
    path = folder / STATE_FILE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UnreadableCheckpoint(f"{path.name} is missing: not a checkpoint of this trainer") from None
    except (OSError, ValueError) as err:
        raise UnreadableCheckpoint(f"{path.name} cannot be read ({type(err).__name__})") from None
    version = state.get("format") if isinstance(state, dict) else None
    if version == PICKLED_FORMAT_VERSION:
        raise PickledCheckpoint(
            "written by an earlier nbhelpers in accelerate's format, whose pickled files a resume no longer loads "
            "(unpickling can run code)"
        )
    if version != FORMAT_VERSION or not _is_run_state(state):
        raise UnreadableCheckpoint(f"{path.name} is not format {FORMAT_VERSION}")
    return state


def _is_run_state(state: dict[str, Any]) -> bool:
    """Whether ``state`` has the fields a resume uses, of the right types."""
    order = state.get("data_order")
    counters = [order.get(name) for name in ("epoch", "batch", "micro_step")] if isinstance(order, dict) else [None]
    files = state.get("files")
    return (
        all(isinstance(value, int) and value >= 0 for value in [state.get("step"), *counters])
        and isinstance(state.get("settings"), dict)
        and isinstance(files, list)
        and all(isinstance(name, str) for name in files)
    )


def write_run_state(folder: Path, state: dict[str, Any], files: list[str]) -> None:
    write_json_atomic(folder / STATE_FILE, {"format": FORMAT_VERSION, **state, "files": sorted(files)})


def unexpected_files(folder: Path, run_state: dict[str, Any]) -> list[str]:
    """Names in ``folder`` that its ``run_state.json`` does not list: not written by this trainer, never read."""
    known = {STATE_FILE, *run_state["files"]}
    return sorted(path.name for path in folder.iterdir() if path.name not in known)


def settings_conflicts(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The :data:`MUST_MATCH` settings on which a checkpoint and the current run differ, as readable phrases."""
    conflicts = []
    for name in MUST_MATCH:
        was, now = saved.get(name), current.get(name)
        if isinstance(was, list) or isinstance(now, (list, tuple)):
            was, now = list(was or []), list(now or [])
        if was != now:
            conflicts.append(f"{name} is {now!r} now but {was!r} in the checkpoint")
    return conflicts


@dataclass
class TrainingState:
    """What a checkpoint holds besides the run state: the trained parameters, the optimizer's, schedule's and
    gradient scaler's states, and this process's random generators."""

    trained_parameters: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    lr_scheduler: dict[str, Any]
    grad_scaler: dict[str, Any]
    rng: dict[str, Any]


def save_training_state(folder: Path, state: TrainingState, *, process_index: int, main: bool) -> None:
    """Write ``state`` into ``folder``: every process its random generators, the main process the rest (the
    processes of a run share their parameters and optimizer)."""

    if main:
        parameters = {name: tensor.detach().contiguous().cpu() for name, tensor in state.trained_parameters.items()}
        data = save(parameters)
        with atomic_open(folder / PARAMETERS_FILE, "wb") as file:
            file.write(data)
        save_state_file(
            folder / TRAINING_STATE_FILE,
            {"optimizer": state.optimizer, "lr_scheduler": state.lr_scheduler, "grad_scaler": state.grad_scaler},
        )
    save_state_file(folder / rng_file(process_index), state.rng)


def load_training_state(
    folder: Path, expected_parameters: Mapping[str, torch.Tensor], *, process_index: int, device: torch.device
) -> TrainingState:
    """Read a checkpoint's :class:`TrainingState` (the optimizer's tensors on ``device``); nothing is applied.

    Raises:
        UnreadableCheckpoint: a file is missing, is not safetensors (a pickle, a truncated copy), or its trained
            parameters are not the run's (``expected_parameters``: names and shapes); the message names the file.
    """

    path = folder / PARAMETERS_FILE
    try:
        parameters = load_file(path)
    except FileNotFoundError:
        raise UnreadableCheckpoint(f"{path.name} is missing") from None
    except (OSError, SafetensorError) as err:
        first_line = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UnreadableCheckpoint(f"{path.name} is not a safetensors file ({first_line})") from None
    try:
        check_tensors(parameters, expected_parameters, path.name)
        training = load_state_file(folder / TRAINING_STATE_FILE, device=device)
        rng = load_state_file(folder / rng_file(process_index))
    except UnreadableState as err:
        raise UnreadableCheckpoint(str(err)) from None
    optimizer, lr_scheduler, grad_scaler = (training.get(name) for name in ("optimizer", "lr_scheduler", "grad_scaler"))
    if not (isinstance(optimizer, dict) and isinstance(lr_scheduler, dict) and isinstance(grad_scaler, dict)):
        raise UnreadableCheckpoint(f"{TRAINING_STATE_FILE} lacks the optimizer, schedule or scaler state")
    return TrainingState(parameters, optimizer, lr_scheduler, grad_scaler, rng)


def find_resumable(
    output_dir: str | os.PathLike[str], settings: dict[str, Any], load: Callable[[Path, dict[str, Any]], None]
) -> dict[str, Any] | None:
    """Load the newest usable checkpoint with ``load(folder, run_state)`` and return its run state (``None``:
    nothing to resume).

    Folders without ``run_state.json`` are skipped (another tool's); a checkpoint ``load`` finds unreadable
    (:class:`UnreadableCheckpoint`) is reported in one line and the one before it tried; files a checkpoint does
    not list are named and left unread.

    Raises:
        CheckpointError: a checkpoint was made with conflicting settings, or none of ours is readable.
    """
    unreadable = []
    for _step, folder in reversed(list_checkpoints(output_dir)):
        if not (folder / STATE_FILE).exists():
            logger.warning("Ignoring %s: no %s, not a checkpoint of this trainer.", folder, STATE_FILE)
            continue
        try:
            state = read_run_state(folder)
            conflicts = settings_conflicts(state.get("settings", {}), settings)
            if conflicts:
                raise CheckpointError(
                    f"Cannot resume from {folder}: {'; '.join(conflicts)}. Run again with the checkpoint's "
                    "settings, or start fresh with another output_dir (or resume=False / --no_resume, which "
                    "replaces these checkpoints)."
                )
            extra = unexpected_files(folder, state)
            if extra:
                logger.warning(
                    "%s: ignoring %s, not written by this trainer (never read).", folder.name, ", ".join(extra)
                )
            load(folder, state)
        except PickledCheckpoint as err:
            logger.warning("Ignoring %s: %s.", folder, err)
            continue
        except UnreadableCheckpoint as err:
            unreadable.append(folder)
            logger.warning("Checkpoint %s cannot be read (%s); trying the previous one.", folder, err)
            continue
        if unreadable:
            logger.warning("Resuming from %s instead.", folder.name)
        return state
    if unreadable:
        raise CheckpointError(
            f"No readable checkpoint in {checkpoint_folder(output_dir)} ({len(unreadable)} unreadable). "
            "Start fresh with resume=False (--no_resume), or remove the broken folders."
        )
    return None


@contextmanager
def staged_checkpoint(accelerator: Any, target: Path) -> Iterator[Path]:
    """A staging folder every process writes into; the main process alone renames it to ``target``.

    The main process opens :func:`nbhelpers.atomic.atomic_folder` and broadcasts the staging path; every
    process writes its part (one random-generator file per process) and waits for the others before the
    rename, so a checkpoint is complete or absent, never half written.
    """

    if accelerator.is_main_process:
        with atomic_folder(target) as staging:
            broadcast_object_list([str(staging)])
            yield staging
            accelerator.wait_for_everyone()
    else:
        path: list[Any] = [None]
        broadcast_object_list(path)
        yield Path(path[0])
        accelerator.wait_for_everyone()
    accelerator.wait_for_everyone()


def prune_checkpoints(output_dir: str | os.PathLike[str], keep: int | None) -> None:
    """Delete the oldest of this trainer's checkpoints beyond ``keep`` (``None``/0: keep all); folders without
    ``run_state.json`` (another tool's ``checkpoint-<n>``) are not ours to delete."""
    if keep:
        ours = [folder for _, folder in list_checkpoints(output_dir) if (folder / STATE_FILE).exists()]
        for old in ours[:-keep]:
            shutil.rmtree(old, ignore_errors=True)


def tidy_after_crash(output_dir: str | os.PathLike[str]) -> None:
    """Remove the staging folders a killed run left, and put back a checkpoint caught between two renames.

    :func:`~nbhelpers.atomic.atomic_folder` moves an existing folder to ``.<name>-*.old/<name>`` before the
    swap: if the run died there, the complete old checkpoint is moved back.
    """
    folder = checkpoint_folder(output_dir)
    if not folder.is_dir():
        return
    for stale in folder.glob(".checkpoint-*"):
        for kept in stale.glob("checkpoint-*") if stale.name.endswith(".old") else []:
            if _NAME.fullmatch(kept.name) and not (folder / kept.name).exists():
                os.replace(kept, folder / kept.name)
        shutil.rmtree(stale, ignore_errors=True)
