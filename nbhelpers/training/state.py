"""Training state in files that cannot run code: tensors in safetensors, everything else as JSON beside them.

A resumable run saves nested dicts, lists and tuples of tensors, numbers, strings, booleans and ``None``: an
optimizer's ``state_dict()``, a learning-rate schedule's, a gradient scaler's, the random generators' states, model
weights. ``torch.save`` pickles them, and unpickling a file runs whatever code the file names
(https://pytorch.org/docs/stable/generated/torch.load.html, "never load data that could have come from an
untrusted source"), which is what a resume from a moved or shared checkpoint folder would do. Here a state is one
safetensors file (https://huggingface.co/docs/safetensors: a JSON header, then raw tensor bytes; reading it parses
the header and copies bytes, nothing else): the tensors are its tensors, and the structure around them, with each
tensor replaced by ``{"$tensor": key}``, is JSON in the header's metadata. Tuples and dicts whose keys are not
strings (an optimizer's state is keyed by parameter index) are spelled out so that they come back as they went.

    save_state_file(path, {"optimizer": optimizer.state_dict(), "rng": rng_states()})
    state = load_state_file(path)          # UnreadableState: not such a file, damaged, or another format
    optimizer.load_state_dict(state["optimizer"])
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from nbhelpers.atomic import atomic_open

#: the header metadata key holding the JSON structure, and the format name recorded beside it
STATE_KEY = "nbhelpers_state"
FORMAT_KEY = "format"
FORMAT = "nbhelpers-training-state-1"

_TENSOR, _TUPLE, _ITEMS = "$tensor", "$tuple", "$items"


class UnreadableState(Exception):
    """A state file that cannot be used: missing, not safetensors, another format, or not what was expected.
    The message names the file and the reason in one line."""


def _encode(value: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    """``value`` as JSON, its tensors moved into ``tensors`` (keys: a running number and their place, ``path``)."""
    if isinstance(value, torch.Tensor):
        key = f"{len(tensors)}:{path}"
        tensors[key] = value.detach().cpu().contiguous()
        return {_TENSOR: key}
    if isinstance(value, bool) or value is None or isinstance(value, (int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        items = [_encode(item, f"{path}/{i}", tensors) for i, item in enumerate(value)]
        return {_TUPLE: items} if isinstance(value, tuple) else items
    if isinstance(value, dict):
        if all(isinstance(key, str) and not key.startswith("$") for key in value):
            return {key: _encode(item, f"{path}/{key}", tensors) for key, item in value.items()}
        if not all(isinstance(key, (int, float, str)) for key in value):  # bool is an int
            raise TypeError(f"training state at {path or '/'} has a mapping key that is not a number or string")
        return {_ITEMS: [[key, _encode(item, f"{path}/{key}", tensors)] for key, item in value.items()]}
    raise TypeError(f"training state at {path or '/'} holds a {type(value).__name__}, which is not saved")


def _decode(value: Any, tensors: dict[str, torch.Tensor], used: set[str]) -> Any:
    if isinstance(value, list):
        return [_decode(item, tensors, used) for item in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {_TENSOR}:
        key = value[_TENSOR]
        if key not in tensors:
            raise UnreadableState(f"names a tensor {key!r} it does not hold")
        used.add(key)
        return tensors[key]
    if set(value) == {_TUPLE}:
        return tuple(_decode(item, tensors, used) for item in value[_TUPLE])
    if set(value) == {_ITEMS}:
        pairs = value[_ITEMS]
        if not isinstance(pairs, list) or not all(isinstance(pair, list) and len(pair) == 2 for pair in pairs):
            raise UnreadableState("holds a malformed mapping")
        return {_key(key): _decode(item, tensors, used) for key, item in pairs}
    return {key: _decode(item, tensors, used) for key, item in value.items()}


def _key(key: Any) -> Any:
    if not isinstance(key, (int, float, str)):
        raise UnreadableState("holds a mapping with an unusable key")
    return key


def state_to_bytes(state: dict[str, Any]) -> bytes:
    """The safetensors bytes of ``state`` (see the module docstring).

    Raises:
        TypeError: ``state`` holds a value other than tensors, numbers, strings, booleans, ``None``, lists,
            tuples and dicts (a programming error: say how to save it first).
    """

    tensors: dict[str, torch.Tensor] = {}
    structure = _encode(state, "", tensors)
    return save(tensors, metadata={FORMAT_KEY: FORMAT, STATE_KEY: json.dumps(structure)})


def save_state_file(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (the old file or the complete new one, never half of one)."""
    data = state_to_bytes(state)
    with atomic_open(path, "wb") as file:
        file.write(data)
    return Path(path)


def load_state_file(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a file written by :func:`save_state_file`; tensors land on ``device``. Nothing in it is executed.

    Raises:
        UnreadableState: the file is missing, not safetensors (a pickle, a truncated copy), of another format, or
            its structure and tensors do not match; the message names the file.
    """

    path = Path(path)
    try:
        with safe_open(path, framework="pt", device=str(device)) as file:
            metadata = file.metadata() or {}
            tensors = {key: file.get_tensor(key) for key in file.keys()}
    except FileNotFoundError:
        raise UnreadableState(f"{path.name} is missing") from None
    except (OSError, SafetensorError, ValueError, RuntimeError) as err:
        first_line = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UnreadableState(f"{path.name} is not a safetensors file ({first_line})") from None
    if metadata.get(FORMAT_KEY) != FORMAT or STATE_KEY not in metadata:
        raise UnreadableState(f"{path.name} is not a training state of this format ({FORMAT})")
    try:
        structure = json.loads(metadata[STATE_KEY])
        used: set[str] = set()
        state = _decode(structure, tensors, used)
    except UnreadableState as err:
        raise UnreadableState(f"{path.name} {err}") from None
    except (ValueError, TypeError, RecursionError) as err:
        raise UnreadableState(f"{path.name} has an unreadable structure ({type(err).__name__})") from None
    if not isinstance(state, dict) or used != tensors.keys():
        raise UnreadableState(f"{path.name} holds tensors its structure does not name")
    return state


def check_tensors(saved: Any, expected: Mapping[str, torch.Tensor], what: str) -> None:
    """Raise :class:`UnreadableState` unless ``saved`` has exactly ``expected``'s names, each a tensor of the same
    shape (so that loading cannot half-fill a model before it fails)."""
    if not isinstance(saved, dict):
        raise UnreadableState(f"{what} is missing")
    if saved.keys() != expected.keys():
        missing, extra = sorted(expected.keys() - saved.keys()), sorted(saved.keys() - expected.keys())
        raise UnreadableState(f"{what} holds other tensors (missing {missing[:3]}, extra {extra[:3]})")
    for name, tensor in expected.items():
        value = saved[name]
        if not isinstance(value, torch.Tensor) or value.shape != tensor.shape:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise UnreadableState(f"{what}: {name} is {shape}, the run's is {tuple(tensor.shape)}")


def rng_states() -> dict[str, Any]:
    """The states of Python's, NumPy's and torch's global random generators (and CUDA's, on a GPU machine)."""
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [name, [int(k) for k in keys], int(position), int(has_gauss), float(cached_gaussian)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what :func:`rng_states` returned.

    Raises:
        UnreadableState: a state is not one these generators accept.
    """
    try:
        python = states["python"]
        random.setstate((python[0], tuple(python[1]), python[2]))
        name, keys, position, has_gauss, cached_gaussian = states["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached_gaussian))
        torch.set_rng_state(states["torch"])
        if torch.cuda.is_available() and "cuda" in states:
            torch.cuda.set_rng_state_all(states["cuda"])
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as err:
        raise UnreadableState(f"random generator states not accepted ({type(err).__name__}: {err})") from None


#: optimizer state tensors that have their parameter's shape (AdamW's moments, SGD's momentum, bitsandbytes' states)
_PARAMETER_SHAPED = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer", "state1", "state2")


def check_optimizer_state(saved: Any, optimizer: torch.optim.Optimizer, what: str = "optimizer state") -> None:
    """Raise :class:`UnreadableState` unless ``saved`` is a state ``optimizer.load_state_dict`` takes: the same
    parameters in the same groups with the same settings, each moment shaped like its parameter."""
    current = optimizer.state_dict()
    groups = saved.get("param_groups") if isinstance(saved, dict) else None
    state = saved.get("state") if isinstance(saved, dict) else None
    if not isinstance(groups, list) or not isinstance(state, dict):
        raise UnreadableState(f"{what} is not an optimizer's state")
    if len(groups) != len(current["param_groups"]) or not all(
        isinstance(group, dict) and group.keys() == live.keys() and group["params"] == live["params"]
        for group, live in zip(groups, current["param_groups"], strict=False)
    ):
        raise UnreadableState(f"{what} is for other parameters or another optimizer")
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    for index, values in state.items():
        if not isinstance(index, int) or not 0 <= index < len(parameters) or not isinstance(values, dict):
            raise UnreadableState(f"{what} holds an entry for no parameter of the run")
        for name in _PARAMETER_SHAPED:
            value = values.get(name)
            if value is not None and (not isinstance(value, torch.Tensor) or value.shape != parameters[index].shape):
                raise UnreadableState(f"{what}: {name} of parameter {index} is not shaped like the parameter")


def check_same_keys(saved: Any, current: dict[str, Any], what: str) -> None:
    """Raise :class:`UnreadableState` unless ``saved`` is a dict with ``current``'s keys (a schedule's or a scaler's
    ``load_state_dict`` copies whatever keys it is given onto the object)."""
    if not isinstance(saved, dict) or saved.keys() != current.keys():
        raise UnreadableState(f"{what} is not this run's kind")
