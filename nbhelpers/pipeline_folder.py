"""Checks of a local pipeline folder, made before anything is loaded from it.

A pipeline folder is input like any other: it may come from a colleague, a download or a half-finished copy.
:func:`check_pipeline_folder` refuses, each with one line that says what is wrong and what to do:

- a ``model_index.json`` that is not a JSON object, or that names a class outside diffusers, transformers and
  ``nbhelpers.models`` (diffusers would import whatever module it names), or a class that does not exist;
- weights stored only as pickle files (``.bin``, ``.pt``, ``.ckpt``, ...): unpickling can run code, so weights
  are read from ``.safetensors`` files only (the loader passes ``use_safetensors=True``);
- a ``.safetensors`` file that is truncated or is not one (a renamed pickle);
- a ``config.json`` that describes a model too large for this machine's memory, or one whose tensors do not
  have the shapes stored in the weight files. Each component is built on PyTorch's ``meta`` device (shapes only,
  no memory) and its parameters are counted; building stops as soon as the count passes what fits, so an absurd
  config is refused in well under a second, before any allocation.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import keyword
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import diffusers
import torch
from diffusers import ModelMixin
from safetensors import SafetensorError, safe_open
from transformers import PreTrainedModel

from nbhelpers.errors import ConfigurationError

#: Files larger than this are not JSON configs (a real ``model_index.json`` or ``config.json`` is a few kB).
MAX_CONFIG_BYTES = 1 << 20
#: Weight files that are pickles: loading one can execute code.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
#: More layers than this in one component is no real model (an SD v1 UNet has 709 modules); building that many
#: even on the meta device takes minutes.
MAX_MODULES = 10_000


class PipelineFolderError(ConfigurationError):
    """A local pipeline folder that cannot be loaded safely; the message names the file and what to do."""


@dataclass(frozen=True)
class Component:
    """One entry of ``model_index.json``: its subfolder and the class that loads it."""

    subfolder: str
    cls: Any  # a diffusers or transformers class (their types are Any to mypy)

    @property
    def has_weights(self) -> bool:
        """Whether the class is a model with weights (a diffusers or transformers model)."""

        return issubclass(self.cls, (ModelMixin, PreTrainedModel))


def read_json_file(path: Path, what: str) -> dict[str, Any]:
    """The JSON object in ``path`` (at most 1 MiB).

    Raises:
        PipelineFolderError: the file is missing, too large, not JSON or not an object.
    """
    try:
        if not path.is_file():  # a folder, a FIFO (reading it would block) or nothing at all
            raise FileNotFoundError(f"no regular file at {path}")
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise PipelineFolderError(f"{path} is {size:,} bytes, not a {what} (a few kB); re-save the pipeline.")
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PipelineFolderError(f"{path} is not a readable {what} ({err}); re-download or re-save it.") from None
    if not isinstance(data, dict):
        raise PipelineFolderError(f"{path} must hold a JSON object, not {type(data).__name__}; re-save it.")
    return data


def _library_module(library: str) -> Any:
    """The module a ``model_index.json`` library name stands for, if it is one a pipeline may use."""
    if library in ("diffusers", "transformers"):
        return importlib.import_module(library)
    if library.startswith("nbhelpers.models.") and importlib.util.find_spec(library) is not None:
        return importlib.import_module(library)
    # diffusers names pipeline-specific classes by their pipeline subpackage ("stable_diffusion").
    if library.isidentifier() and not keyword.iskeyword(library):
        name = f"diffusers.pipelines.{library}"
        if importlib.util.find_spec(name) is not None:
            return importlib.import_module(name)
    return None


def _component(index_file: Path, subfolder: str, entry: Any) -> Component | None:
    """Resolve one ``model_index.json`` entry (``None`` for a component left out, such as ``[null, null]``)."""
    if not (isinstance(entry, list) and len(entry) == 2):
        return None  # a plain setting such as requires_safety_checker
    library, class_name = entry
    if library is None or class_name is None:
        return None
    where = f"{index_file} names {subfolder} as {json.dumps(entry)}"
    if not isinstance(library, str) or not isinstance(class_name, str) or class_name.startswith("_"):
        raise PipelineFolderError(f"{where}: an entry must be [library, class name].")
    module = _library_module(library)
    if module is None:
        raise PipelineFolderError(
            f"{where}: a pipeline may name classes of diffusers, transformers or nbhelpers.models only, not "
            f"{library!r}. Fix the entry or re-save the pipeline with diffusers."
        )
    cls = getattr(module, class_name, None) if class_name.isidentifier() else None
    if not isinstance(cls, type):
        raise PipelineFolderError(
            f"{where}, but {library} has no class {class_name!r} (a newer library, a typo?). Fix the entry or "
            "upgrade the library it needs."
        )
    return Component(subfolder, cls)


def pipeline_class_name(index: dict[str, Any], index_file: Path) -> str:
    """The ``_class_name`` of ``model_index.json``, checked to be a diffusers pipeline (or DeciDiffusion's).

    Raises:
        PipelineFolderError: it is missing or names no pipeline class.
    """

    name = index.get("_class_name")
    if name == "DeciDiffusionPipeline":
        return str(name)
    cls = getattr(diffusers, name, None) if isinstance(name, str) and name.isidentifier() else None
    if not (isinstance(cls, type) and issubclass(cls, diffusers.DiffusionPipeline)):
        raise PipelineFolderError(
            f"{index_file} names the pipeline class {name!r}, which diffusers does not have (and remote code is "
            "never run): give a folder saved by a diffusers pipeline such as StableDiffusionPipeline."
        )
    return str(name)


def _check_weights(folder: Path) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor in a component folder's safetensors files (read from their headers); refuses a
    folder whose weights are pickles only, or whose safetensors files are damaged."""

    files = sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
    safe = [p for p in files if p.suffix == ".safetensors"]
    pickles = [p.name for p in files if p.suffix in PICKLE_SUFFIXES]
    if not safe and pickles:
        raise PipelineFolderError(
            f"{folder} holds only pickle weight files ({', '.join(pickles)}); loading a pickle can run code, so "
            "only .safetensors weights are loaded. Convert them where you trust the files: load the pipeline with "
            "diffusers and call save_pretrained(folder, safe_serialization=True)."
        )
    if not safe:
        raise PipelineFolderError(f"{folder} holds no weight file (.safetensors); re-download or re-save it.")
    shapes: dict[str, tuple[int, ...]] = {}
    for path in safe:
        try:
            with safe_open(str(path), framework="pt") as weights:
                names = weights.keys()  # a safe_open handle is no mapping: iterating it does not give the names
                shapes.update({name: tuple(weights.get_slice(name).get_shape()) for name in names})
        except (SafetensorError, OSError) as err:
            raise PipelineFolderError(
                f"{path} is not a complete safetensors file ({err}): it may have been cut short by an interrupted "
                "download or copy. Download or save it again."
            ) from None
    return shapes


def _check_shapes(model: torch.nn.Module, shapes: dict[str, tuple[int, ...]], config_file: Path) -> None:
    """Refuse a config whose model has tensors of other shapes than the weight files (loading would fail, or
    allocate the config's sizes first). Names the files store under a prefix (``text_model.``) are matched too."""
    stripped = {key.split(".", 1)[-1]: shape for key, shape in shapes.items()}
    for name, tensor in model.state_dict().items():
        stored = shapes.get(name, stripped.get(name))
        if stored is not None and tuple(tensor.shape) != stored:
            raise PipelineFolderError(
                f"{config_file} does not match its weights: {name} is {list(tensor.shape)} in the config but "
                f"{list(stored)} in the weight file. Re-download or re-save the pipeline (or fix the config)."
            )


class _TooLarge(Exception):
    """Raised inside a meta-device build once it has passed its parameter or module budget."""


def count_parameters_on_meta(
    component: Component, folder: Path, max_parameters: int, shapes: dict[str, tuple[int, ...]] | None = None
) -> int:
    """Parameters of ``component`` as its ``config.json`` describes it, counted on the meta device.

    Returns ``max_parameters + 1`` (or more) as soon as the count passes ``max_parameters``. With ``shapes`` (of
    the weight files), the model's tensors must have the same shapes.

    Raises:
        PipelineFolderError: the config cannot be read or builds no model, has more than ``MAX_MODULES`` layers,
            or does not match the weights' shapes.
    """

    subfolder = folder / component.subfolder
    config = read_json_file(subfolder / "config.json", "model config")
    counted = {"parameters": 0, "modules": 0}

    def on_parameter(module: torch.nn.Module, name: str, parameter: torch.nn.Parameter | None) -> None:
        counted["parameters"] += parameter.numel() if parameter is not None else 0
        if counted["parameters"] > max_parameters:
            raise _TooLarge

    def on_module(module: torch.nn.Module, name: str, submodule: torch.nn.Module | None) -> None:
        counted["modules"] += 1
        if counted["modules"] > MAX_MODULES:
            raise _TooLarge

    hooks = [
        torch.nn.modules.module.register_module_parameter_registration_hook(on_parameter),
        torch.nn.modules.module.register_module_module_registration_hook(on_module),
    ]
    try:
        with torch.device("meta"):
            if issubclass(component.cls, ModelMixin):
                model = component.cls.from_config(config)
            else:  # a transformers model: its config class reads config.json, the model is built from it
                model = component.cls(component.cls.config_class.from_dict(config))
    except _TooLarge:
        if counted["modules"] > MAX_MODULES:
            raise PipelineFolderError(
                f"{subfolder / 'config.json'} describes a model of more than {MAX_MODULES:,} layers; no released "
                "model has that many. Check the config."
            ) from None
        return counted["parameters"]
    except Exception as err:  # noqa: BLE001 - a config is input: whatever it makes a constructor raise, say so
        raise PipelineFolderError(
            f"{subfolder / 'config.json'} does not describe a {component.cls.__name__} that can be built "
            f"({type(err).__name__}: {err}); re-download or re-save the pipeline."
        ) from None
    finally:
        for hook in hooks:
            hook.remove()
    if shapes:
        _check_shapes(model, shapes, subfolder / "config.json")
    return sum(p.numel() for p in model.parameters())


def check_pipeline_folder(folder: Path, *, bytes_per_parameter: int, memory_bytes: int | None, memory_name: str) -> int:
    """Check a local pipeline folder before it is loaded (see the module docstring); return its parameter count.

    Args:
        folder: the folder holding ``model_index.json``.
        bytes_per_parameter: size of one weight in the dtype it will be loaded in (2 for float16, 4 for float32).
        memory_bytes: memory the weights must fit in (``None``: not checked).
        memory_name: what that memory is, for the message (``"RAM"``, ``"GPU memory"``).

    Raises:
        PipelineFolderError: naming the file at fault and what to do.
    """
    index_file = folder / "model_index.json"
    index = read_json_file(index_file, "model_index.json")
    pipeline_class_name(index, index_file)
    components = [c for name, entry in index.items() if (c := _component(index_file, name, entry)) is not None]
    if (folder / "flexible_unet" / "config.json").is_file():  # DeciDiffusion's hub layout: its unet/ is unused
        from nbhelpers.models.flexible_unet import FlexibleUNet2DConditionModel

        components = [c for c in components if c.subfolder != "unet"]
        components.append(Component("flexible_unet", FlexibleUNet2DConditionModel))
    models = [c for c in components if c.has_weights]
    shapes = {c.subfolder: _check_weights(folder / c.subfolder) for c in models}
    budget = memory_bytes // bytes_per_parameter if memory_bytes is not None else 2**62
    counts: dict[str, int] = {}
    for component in models:
        left = budget - sum(counts.values())
        counts[component.subfolder] = count_parameters_on_meta(component, folder, left, shapes[component.subfolder])
        if memory_bytes is not None and sum(counts.values()) * bytes_per_parameter > memory_bytes:
            largest = max(counts, key=lambda name: counts[name])
            needed = sum(counts.values()) * bytes_per_parameter
            raise PipelineFolderError(
                f"{folder} describes a model of at least {sum(counts.values()):,} parameters "
                f"({needed / 2**30:,.1f} GiB at {bytes_per_parameter} bytes each), more than this machine's "
                f"{memory_bytes / 2**30:,.1f} GiB of {memory_name}; {largest}/config.json alone makes "
                f"{counts[largest]:,} (an SD v1.x UNet has 859,520,964). Check that config."
            )
    return sum(counts.values())
