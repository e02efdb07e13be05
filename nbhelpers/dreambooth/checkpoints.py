"""Training checkpoints: small (trained parameters only), atomic, and never fatal to a resume.

A checkpoint is the folder ``<output_dir>/checkpoints/checkpoint-<step>`` written by ``accelerate``'s
``save_state`` (optimizer, learning-rate scheduler, gradient scaler and every process's RNG states) with two
files of ours:

- ``trained_parameters.safetensors``: only the parameters the optimizer updates (the LoRA adapters, or the
  whole UNet for full fine-tuning), never the frozen weights, which the base model already holds;
- ``run_state.json``: the step, the data order (epoch and batch within it) and the settings a resume must
  share (mode, LoRA rank and targets, ...).

Folders whose name is not ``checkpoint-<number>`` are ignored (never read, never deleted). A checkpoint that
cannot be read is reported and the one before it is used.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from nbhelpers.atomic import atomic_folder, atomic_open, write_json_atomic
from nbhelpers.dreambooth.config import DreamBoothConfigError

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
PARAMETERS_FILE = "trained_parameters.safetensors"
STATE_FILE = "run_state.json"
FORMAT_VERSION = 1
_NAME = re.compile(r"checkpoint-(\d+)")
#: settings a resumed run must share with its checkpoint: other values would load into a different model
MUST_MATCH = ("use_lora", "lora_rank", "lora_target_modules", "train_text_encoder", "model")


class CheckpointError(DreamBoothConfigError):
    """No checkpoint can be resumed, or one conflicts with the run's settings; the message says what to do."""


class UnreadableCheckpoint(Exception):
    """One checkpoint folder cannot be used (truncated, partly deleted, not ours)."""


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
        UnreadableCheckpoint: missing, not JSON, or of another format.
    """
    path = folder / STATE_FILE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UnreadableCheckpoint(f"{path.name} is missing: not a checkpoint of this trainer") from None
    except (OSError, ValueError) as err:
        raise UnreadableCheckpoint(f"{path.name} cannot be read ({err})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        raise UnreadableCheckpoint(f"{path.name} is not format {FORMAT_VERSION}")
    return state


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


def save_trained_parameters(parameters: dict[str, torch.Tensor], folder: Path) -> Path:
    """Write ``{name: tensor}`` to ``folder/trained_parameters.safetensors`` (atomically)."""
    from safetensors.torch import save

    path = folder / PARAMETERS_FILE
    data = save({name: tensor.detach().contiguous().cpu() for name, tensor in parameters.items()})
    with atomic_open(path, "wb") as file:
        file.write(data)
    return path


def load_trained_parameters(parameters: dict[str, torch.Tensor], folder: Path) -> None:
    """Copy the checkpoint's trained parameters into ``parameters`` (same names and shapes), in place.

    Raises:
        UnreadableCheckpoint: the file is missing, truncated, or its names/shapes differ from the run's.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = folder / PARAMETERS_FILE
    try:
        saved = load_file(path)
    except (OSError, SafetensorError) as err:
        raise UnreadableCheckpoint(f"{path.name} cannot be read ({type(err).__name__}: {err})") from None
    if saved.keys() != parameters.keys():
        missing, extra = sorted(parameters.keys() - saved.keys()), sorted(saved.keys() - parameters.keys())
        raise UnreadableCheckpoint(f"{path.name} holds other parameters (missing {missing[:3]}, extra {extra[:3]})")
    for name, tensor in parameters.items():
        if saved[name].shape != tensor.shape:
            raise UnreadableCheckpoint(
                f"{path.name}: {name} is {tuple(saved[name].shape)}, the run's is {tuple(tensor.shape)}"
            )
    with torch.no_grad():
        for name, tensor in parameters.items():
            tensor.copy_(saved[name])


def write_run_state(folder: Path, state: dict[str, Any]) -> None:
    write_json_atomic(folder / STATE_FILE, {"format": FORMAT_VERSION} | state)


@contextmanager
def staged_checkpoint(accelerator: Any, target: Path) -> Iterator[Path]:
    """A staging folder every process writes into; the main process alone renames it to ``target``.

    The main process opens :func:`nbhelpers.atomic.atomic_folder` and broadcasts the staging path; every
    process writes its part (accelerate writes one RNG file per process) and waits for the others before
    the rename, so a checkpoint is complete or absent, never half written.
    """
    from accelerate.utils import broadcast_object_list

    if accelerator.is_main_process:
        with atomic_folder(target) as staging:
            broadcast_object_list([str(staging)])
            yield staging
            accelerator.wait_for_everyone()
    else:
        path = [None]
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
