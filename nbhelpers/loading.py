"""One call to load a text-to-image pipeline by catalog name, hub id or local folder.

``load_pipeline("deci-v1")`` downloads (or finds in the Hugging Face cache) the real weights, picks the
device and dtype, applies memory savers on small GPUs and returns a ready diffusers pipeline.
``load_pipeline("deci-v1", stand_in="toy")`` (or ``NBHELPERS_STAND_IN=toy``) returns an offline stand-in in the same
layout and code path (:mod:`nbhelpers.stand_in`); the loader finds its files, so callers never name a folder.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import torch
from diffusers import DiffusionPipeline
from safetensors import SafetensorError

from nbhelpers.catalog import ModelSpec, UnknownModelError, find_spec, get_spec, known_model_names, normalise_name
from nbhelpers.device import pick_device, pick_dtype, total_memory_bytes
from nbhelpers.errors import ConfigurationError, UserFacingError
from nbhelpers.models.components import pipeline_class
from nbhelpers.models.deci_pipeline import DeciDiffusionPipeline
from nbhelpers.models.flexible_unet import FlexibleUNet2DConditionModel
from nbhelpers.models.schedulers import SCHEDULERS, swap_scheduler
from nbhelpers.models.tiny import tiny_pipeline_path
from nbhelpers.perf.optimize import OPTIMIZE_MODES, optimize_pipeline
from nbhelpers.pipeline_folder import check_pipeline_folder, read_json_file
from nbhelpers.stand_in import STAND_IN_VARIABLE, StandIn, resolve_stand_in, stand_in_mark
from nbhelpers.toy.pipelines import toy_pipeline_path

logger = logging.getLogger(__name__)

#: GPUs with less memory than this get attention and VAE slicing (bytes).
SLICING_BELOW_BYTES = 8 * 2**30
#: GPUs with less memory than this keep idle components on the CPU (model CPU offload) (bytes).
OFFLOAD_BELOW_BYTES = 5 * 2**30

_NO_HUB_HINT = (
    "Without internet access to the Hugging Face hub you can: use an offline stand-in with stand_in='toy' (a small "
    "trained 'shapes' model whose pictures follow simple prompts) or stand_in='tiny' (random weights, for trying "
    "the code), the --toy / --tiny flags or "
    + STAND_IN_VARIABLE
    + "=toy; or pass the path of a local pipeline folder; "
    "or download once where you have access (`hf download {hub_id}`) and set HF_HUB_OFFLINE=1. Gated or private "
    "models also need `hf auth login`."
)


class ModelLoadError(UserFacingError, RuntimeError):
    """Raised when a pipeline cannot be loaded; the message says what to do about it."""


@dataclass(frozen=True)
class LoadInfo:
    """How a pipeline was loaded (kept on the pipeline as ``pipe.nbhelpers_info``).

    Attributes:
        source: hub id or local folder (its absolute path) passed to ``from_pretrained``.
        spec: the catalog entry, or ``None`` for a model outside the catalog.
        stand_in: ``"toy"`` or ``"tiny"`` when an offline stand-in replaces the catalog entry's weights
            (:mod:`nbhelpers.stand_in`), ``None`` for the real model.
        device: device the pipeline runs on.
        dtype: weight dtype.
        memory_savers: the memory savers turned on (e.g. ``["attention_slicing", "vae_slicing"]``).
        fast_path: the few-step fast path applied (e.g. ``"lcm-lora"``, see :mod:`nbhelpers.perf.fast_paths`), or
            ``None``.
    """

    source: str
    spec: ModelSpec | None
    stand_in: StandIn | None
    device: torch.device
    dtype: torch.dtype
    memory_savers: tuple[str, ...]
    fast_path: str | None = None

    @property
    def mark(self) -> str:
        """``"tiny, random weights"``, ``"toy model (shapes)"`` or ``""`` for the real model."""
        return stand_in_mark(self.stand_in)

    @property
    def label(self) -> str:
        """Short human-readable name, marked when a stand-in replaces the real weights."""
        name = self.spec.name if self.spec else self.source
        name = f"{name} + {self.fast_path}" if self.fast_path else name
        return f"{name} ({self.mark})" if self.mark else name


def _folder_kind(folder: Path) -> str:
    """``"deci-hub"`` (hub layout with flexible_unet/), ``"flexible"`` (saved pipeline whose unet is flexible)
    or ``"diffusers"``."""
    index_file = folder / "model_index.json"
    if not index_file.is_file():
        raise ModelLoadError(
            f"{folder} is not a diffusers pipeline folder: model_index.json is missing. Give the folder that "
            "holds model_index.json and the component subfolders (unet/, vae/, text_encoder/, ...)."
        )
    if (folder / "flexible_unet" / "config.json").is_file():
        return "deci-hub"
    unet_entry = read_json_file(index_file, "model_index.json").get("unet")
    flexible = isinstance(unet_entry, list) and unet_entry[-1:] == [FlexibleUNet2DConditionModel.__name__]
    return "flexible" if flexible else "diffusers"


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~"))


def _resolve_source(model: str | os.PathLike[str], stand_in: StandIn | None) -> tuple[str, ModelSpec | None, bool]:
    """Return (from_pretrained source, catalog spec or None, is_local_folder); a stand-in's folder is found here."""
    if not isinstance(model, (str, os.PathLike)) or not str(model).strip():
        raise ConfigurationError(
            f"model must be a catalog name ({', '.join(known_model_names())}), a hub id or a folder; got {model!r}."
        )
    path = Path(model).expanduser()
    try:
        is_folder, is_file = path.is_dir(), path.is_file()
    except (OSError, ValueError):  # a name too long for a path, or one with a NUL byte: not a folder
        is_folder = is_file = False
    if is_folder:  # by its absolute path: the same folder is one model whichever way it was named
        return str(path.resolve()), None, True
    if is_file:
        raise ModelLoadError(
            f"{model} is a file, not a pipeline folder: give the folder that holds model_index.json. Single-file "
            "checkpoints are not loaded; convert one where you trust it with diffusers' "
            "StableDiffusionPipeline.from_single_file(...).save_pretrained(folder)."
        )
    name = str(model)
    spec = find_spec(name)
    if spec is None and not _looks_like_hub_id(name):
        if "/" in name or name.startswith((".", "~")):
            raise ModelLoadError(f"Folder {name!r} does not exist. Check the path, or give a catalog name or hub id.")
        get_spec(name)  # raises UnknownModelError listing the known names
    if stand_in is not None:
        if spec is None:
            raise UnknownModelError(
                f"The {stand_in} stand-in exists only for catalog models ({', '.join(known_model_names())}); "
                f"{name!r} is not one. Pass a catalog name, or load the real model (stand_in=None; unset "
                f"{STAND_IN_VARIABLE})."
            )
        if stand_in == "tiny":
            return str(tiny_pipeline_path(spec.name)), spec, True
        try:
            return str(toy_pipeline_path(spec)), spec, True
        except FileNotFoundError as err:
            raise ModelLoadError(str(err)) from None
    if spec is not None:
        if "/" in name and normalise_name(name) != spec.hub_id.lower():
            logger.warning("%s was removed from the hub; loading %s instead.", name, spec.hub_id)
        return spec.hub_id, spec, False
    return name, None, False


def _from_pretrained(loader: Any, source: str, is_local: bool, **kwargs: Any) -> Any:
    """Call ``loader.from_pretrained`` and turn download failures, and whatever a damaged local folder makes the
    libraries raise, into a :class:`ModelLoadError`."""

    try:
        return loader.from_pretrained(source, **kwargs)
    except (RuntimeError, TypeError, AttributeError, KeyError, IndexError, SafetensorError) as err:
        if not is_local or isinstance(err, UserFacingError):
            raise
        # A folder is input: a config the classes reject, weights that do not fit it. Say which folder and why.
        raise ModelLoadError(f"Could not load the pipeline folder {source}: {type(err).__name__}: {err}") from err
    except (OSError, ValueError) as err:
        if is_local:
            raise ModelLoadError(f"Could not load the pipeline folder {source}: {err}") from err
        raise ModelLoadError(
            f"Could not load {source} from the Hugging Face hub or its local cache: {err}\n"
            + _NO_HUB_HINT.format(hub_id=source)
        ) from err


_MODEL_KWARGS = ("revision", "cache_dir", "local_files_only", "token", "use_safetensors")


def _names_deci_pipeline(folder: Path, is_local: bool) -> bool:
    """Whether a local folder's model_index.json names DeciDiffusionPipeline (not a class diffusers has)."""
    return is_local and read_json_file(folder / "model_index.json", "model_index.json").get("_class_name") == (
        DeciDiffusionPipeline.__name__
    )


def _load_flexible_unet(
    source: str, is_local: bool, weight_dtype: torch.dtype, kwargs: dict[str, Any]
) -> FlexibleUNet2DConditionModel:
    """Load DeciDiffusion's denoiser from ``flexible_unet/``: the plain weight file (stored in fp16, as the model
    card loads it), else an ``fp16`` variant file if that is what the folder holds."""
    try:
        return _from_pretrained(
            FlexibleUNet2DConditionModel, source, is_local, subfolder="flexible_unet", dtype=weight_dtype, **kwargs
        )
    except ModelLoadError as first_error:
        try:
            return _from_pretrained(
                FlexibleUNet2DConditionModel,
                source,
                is_local,
                subfolder="flexible_unet",
                dtype=weight_dtype,
                variant="fp16",
                **kwargs,
            )
        except ModelLoadError:
            raise first_error from None


def _resolve_memory_savers(device: torch.device, memory_savers: str) -> str:
    """``"off"``, ``"slicing"`` or ``"offload"``: ``memory_savers`` with ``"auto"`` decided by the GPU's memory."""
    if memory_savers not in ("auto", "off", "slicing", "offload"):
        raise ConfigurationError(f"memory_savers must be 'auto', 'off', 'slicing' or 'offload'; got {memory_savers!r}.")
    if memory_savers != "auto":
        return memory_savers
    total = total_memory_bytes(device)
    if total is None or total >= SLICING_BELOW_BYTES:
        return "off"
    return "offload" if total < OFFLOAD_BELOW_BYTES else "slicing"


def _apply_memory_savers(pipe: DiffusionPipeline, device: torch.device, memory_savers: str) -> tuple[str, ...]:
    """Turn on the savers :func:`_resolve_memory_savers` chose and move the pipeline to ``device``."""
    if memory_savers == "off":
        pipe.to(device)
        return ()
    pipe.enable_attention_slicing()
    if hasattr(pipe, "vae") and hasattr(pipe.vae, "enable_slicing"):
        pipe.vae.enable_slicing()
    if memory_savers == "offload" and device.type == "cuda":
        pipe.enable_model_cpu_offload(device=device)
        return ("attention_slicing", "vae_slicing", "model_cpu_offload")
    pipe.to(device)
    return ("attention_slicing", "vae_slicing")


def _memory_for_weights(device: torch.device, memory_savers: str) -> tuple[int, str]:
    """Bytes the weights must fit in, and their name: the GPU's memory, or RAM when they stay on the CPU."""
    gpu = total_memory_bytes(device)
    if gpu is not None and memory_savers != "offload":
        return gpu, "GPU memory"

    return int(psutil.virtual_memory().total), "RAM"


def _check_choices(scheduler: Any, optimize: Any) -> None:
    """Refuse an unknown scheduler or fast-path mode before minutes go into loading the weights."""

    if scheduler is not None and (not isinstance(scheduler, str) or scheduler.strip().lower() not in SCHEDULERS):
        raise ConfigurationError(f"Unknown scheduler {scheduler!r}; choose one of {', '.join(SCHEDULERS)}.")
    if optimize is not None and optimize not in OPTIMIZE_MODES:
        raise ConfigurationError(f"Unknown optimize mode {optimize!r}; choose one of {', '.join(OPTIMIZE_MODES)}.")


def _check_loading_options(options: dict[str, Any]) -> None:
    """Refuse ``from_pretrained`` options that would run code from the model or unpickle its weights."""
    unsafe = {"custom_pipeline", "trust_remote_code"} & set(options)
    if unsafe:
        raise ConfigurationError(
            f"{', '.join(sorted(unsafe))}: nbhelpers runs no code that comes with a model (DeciDiffusion's pipeline "
            "is built in); load a diffusers pipeline folder or hub id without it."
        )
    if options.get("use_safetensors") is False:
        raise ConfigurationError(
            "use_safetensors=False would unpickle .bin weights, which can run code; convert them to .safetensors "
            "where you trust them (save_pretrained(folder, safe_serialization=True))."
        )


def load_pipeline(
    model: str | os.PathLike[str] = "deci-v1",
    *,
    stand_in: str | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    safety_checker: bool = True,
    scheduler: str | None = None,
    memory_savers: str = "auto",
    optimize: str | None = None,
    fast_path: str | None = None,
    progress: bool = True,
    **from_pretrained_kwargs: Any,
) -> DiffusionPipeline:
    """Load a text-to-image pipeline ready to call.

    Args:
        model: catalog name (``"deci-v1"``, ``"sd-v1-5"``, ...; see :mod:`nbhelpers.catalog`), an alias such
            as the removed ``"runwayml/stable-diffusion-v1-5"``, any diffusers hub id, or a local folder.
        stand_in: ``"toy"`` (the trained toy "shapes" model standing in for the catalog entry) or ``"tiny"``
            (its layout with random weights); ``None`` follows ``NBHELPERS_STAND_IN``, ``"none"`` forces the real
            model. See :mod:`nbhelpers.stand_in`.
        device: ``"cuda"``, ``"mps"`` or ``"cpu"`` (default: the best available).
        dtype: weight dtype (default: float16 on GPUs, float32 on CPU).
        safety_checker: keep the repo's NSFW safety checker (flagged images come back black).
        scheduler: optional scheduler to swap in, by name (see :func:`nbhelpers.models.schedulers.swap_scheduler`).
        memory_savers: ``"auto"`` (slicing below 8 GiB of GPU memory, CPU offload below 5 GiB), ``"off"``,
            ``"slicing"`` or ``"offload"``.
        optimize: the fast path, e.g. ``"compile"`` (see :mod:`nbhelpers.perf.optimize`); ``None`` keeps the plain
            pipeline.
        fast_path: a few-step adapter for SD v1.x with its scheduler and its authors' steps and guidance as the
            generation defaults: ``"lcm-lora"``, ``"hyper-sd-cfg"`` or ``"tcd-lora"`` (see
            :mod:`nbhelpers.perf.fast_paths`; refused for DeciDiffusion, whose UNet no SD adapter fits).
        progress: show diffusers' per-step progress bar when generating.
        **from_pretrained_kwargs: passed on (e.g. ``revision``, ``cache_dir``, ``variant``); options that would
            run code shipped with a model (``custom_pipeline``, ``trust_remote_code``) or unpickle weights
            (``use_safetensors=False``) are refused.

    A local folder is read as input from anyone: only its ``.safetensors`` weights are loaded (never a pickled
    ``.bin``/``.pt``/``.ckpt``), and a folder outside the stand-ins is checked first by
    :func:`nbhelpers.pipeline_folder.check_pipeline_folder` (classes it names, damaged weight files, a config
    too large for this machine's memory), before anything is allocated.

    Returns:
        A diffusers pipeline; ``pipe.nbhelpers_info`` is a :class:`LoadInfo` describing it.

    Raises:
        ConfigurationError: ``stand_in`` (or ``NBHELPERS_STAND_IN``), ``device``, ``dtype`` or ``memory_savers`` is
            not one of the accepted values (the message lists them), or an unsafe option was given.
        UnknownModelError: the name is not in the catalog and is neither a hub id nor a folder.
        PipelineFolderError: a local folder failed the checks above (the message names the file).
        ModelLoadError: the weights could not be found or downloaded (the message says how to go offline), or a
            local folder could not be loaded.
    """
    _check_loading_options(from_pretrained_kwargs)
    _check_choices(scheduler, optimize)
    resolved = resolve_stand_in(stand_in)
    source, spec, is_local = _resolve_source(model, resolved)
    if fast_path is not None:  # refused before any download: unknown name, a toy stand-in, a UNet it does not fit
        from nbhelpers.perf.fast_paths import check_fast_path_for

        fast_path = check_fast_path_for(fast_path, spec, resolved).name
    target_device = pick_device(device)
    weight_dtype = pick_dtype(target_device, dtype)
    savers = _resolve_memory_savers(target_device, memory_savers)
    kwargs: dict[str, Any] = {"dtype": weight_dtype, **from_pretrained_kwargs}
    if is_local:  # weights from a folder: safetensors only, never a pickle (see nbhelpers.pipeline_folder)
        kwargs["use_safetensors"] = True
    if not safety_checker:
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    if not is_local and spec is not None and spec.fp16_variant and weight_dtype == torch.float16:
        kwargs.setdefault("variant", "fp16")

    kind = _folder_kind(Path(source)) if is_local else ("deci-hub" if spec and spec.unet_kind == "flexible" else "")
    if is_local and spec is None:  # a user's folder (stand-ins are built here): checked before anything loads
        memory, memory_name = _memory_for_weights(target_device, savers)
        check_pipeline_folder(
            Path(source),
            bytes_per_parameter=torch.empty((), dtype=weight_dtype).element_size(),
            memory_bytes=memory,
            memory_name=memory_name,
        )
    if spec is not None:
        pipeline_cls = pipeline_class(spec)
    elif kind in ("deci-hub", "flexible") or _names_deci_pipeline(Path(source), is_local):
        pipeline_cls = DeciDiffusionPipeline  # a folder outside the catalog that holds DeciDiffusion
    else:
        pipeline_cls = DiffusionPipeline
    if kind == "deci-hub":
        unet_kwargs = {k: v for k, v in kwargs.items() if k in _MODEL_KWARGS}
        unet = _load_flexible_unet(source, is_local, weight_dtype, unet_kwargs)
        kwargs.pop("variant", None)
        pipe = _from_pretrained(pipeline_cls, source, is_local, unet=unet, **kwargs)
    else:
        pipe = _from_pretrained(pipeline_cls, source, is_local, **kwargs)

    if scheduler is not None:
        swap_scheduler(pipe, scheduler)
    applied = _apply_memory_savers(pipe, target_device, savers)
    if fast_path is not None:  # before optimize: fused QKV projections and compiled code must see the fused weights
        from nbhelpers.perf.fast_paths import apply_fast_path

        hub_kwargs = {
            k: v for k, v in from_pretrained_kwargs.items() if k in ("cache_dir", "token", "local_files_only")
        }
        apply_fast_path(pipe, fast_path, stand_in=resolved, **hub_kwargs)
    if optimize is not None:
        optimize_pipeline(pipe, optimize)
    pipe.set_progress_bar_config(disable=not progress)
    pipe.nbhelpers_info = LoadInfo(
        source=source,
        spec=spec,
        stand_in=resolved,
        device=target_device,
        dtype=weight_dtype,
        memory_savers=applied,
        fast_path=fast_path,
    )
    return pipe


def load_info(pipe: DiffusionPipeline) -> LoadInfo | None:
    """The :class:`LoadInfo` of a pipeline loaded by :func:`load_pipeline` (``None`` for other pipelines)."""
    return getattr(pipe, "nbhelpers_info", None)
