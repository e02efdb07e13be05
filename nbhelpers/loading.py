"""One call to load a text-to-image pipeline by catalog name, hub id or local folder.

``load_pipeline("deci-v1")`` downloads (or finds in the Hugging Face cache) the real weights, picks the
device and dtype, applies memory savers on small GPUs and returns a ready diffusers pipeline.
``load_pipeline("deci-v1", stand_in="toy")`` (or ``NBHELPERS_STAND_IN=toy``) returns an offline stand-in in the same
layout and code path (:mod:`nbhelpers.stand_in`); the loader finds its files, so callers never name a folder.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import DiffusionPipeline

from nbhelpers.catalog import ModelSpec, UnknownModelError, find_spec, get_spec, known_model_names, normalise_name
from nbhelpers.device import pick_device, pick_dtype, total_memory_bytes
from nbhelpers.errors import UserFacingError
from nbhelpers.models.components import pipeline_class
from nbhelpers.models.deci_pipeline import DeciDiffusionPipeline
from nbhelpers.models.flexible_unet import FlexibleUNet2DConditionModel
from nbhelpers.models.schedulers import swap_scheduler
from nbhelpers.models.tiny import tiny_pipeline_path
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
        source: hub id or local folder passed to ``from_pretrained``.
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
    try:
        index = json.loads(index_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ModelLoadError(f"{index_file} is not valid JSON ({err}); re-download or re-save the pipeline.") from err
    unet_entry = index.get("unet") or [None, None]
    return "flexible" if unet_entry[-1] == FlexibleUNet2DConditionModel.__name__ else "diffusers"


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~"))


def _resolve_source(model: str | os.PathLike[str], stand_in: StandIn | None) -> tuple[str, ModelSpec | None, bool]:
    """Return (from_pretrained source, catalog spec or None, is_local_folder); a stand-in's folder is found here."""
    path = Path(model).expanduser()
    if path.is_dir():
        return str(path), None, True
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
    """Call ``loader.from_pretrained`` and turn download failures into a :class:`ModelLoadError`."""
    try:
        with warnings.catch_warnings():
            # diffusers >= 0.36 renames torch_dtype to dtype; torch_dtype keeps working on every supported version.
            warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
            return loader.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as err:
        if is_local:
            raise ModelLoadError(f"Could not load the pipeline folder {source}: {err}") from err
        raise ModelLoadError(
            f"Could not load {source} from the Hugging Face hub or its local cache: {err}\n"
            + _NO_HUB_HINT.format(hub_id=source)
        ) from err


_MODEL_KWARGS = ("revision", "cache_dir", "local_files_only", "token")


def _load_flexible_unet(
    source: str, is_local: bool, torch_dtype: torch.dtype, kwargs: dict[str, Any]
) -> FlexibleUNet2DConditionModel:
    """Load DeciDiffusion's denoiser from ``flexible_unet/``: the plain weight file (stored in fp16, as the model
    card loads it), else an ``fp16`` variant file if that is what the folder holds."""
    try:
        return _from_pretrained(
            FlexibleUNet2DConditionModel, source, is_local, subfolder="flexible_unet", torch_dtype=torch_dtype, **kwargs
        )
    except ModelLoadError as first_error:
        try:
            return _from_pretrained(
                FlexibleUNet2DConditionModel,
                source,
                is_local,
                subfolder="flexible_unet",
                torch_dtype=torch_dtype,
                variant="fp16",
                **kwargs,
            )
        except ModelLoadError:
            raise first_error from None


def _apply_memory_savers(pipe: DiffusionPipeline, device: torch.device, memory_savers: str) -> tuple[str, ...]:
    if memory_savers not in ("auto", "off", "slicing", "offload"):
        raise ValueError(f"memory_savers must be 'auto', 'off', 'slicing' or 'offload'; got {memory_savers!r}.")
    total = total_memory_bytes(device)
    if memory_savers == "auto":
        if total is None or total >= SLICING_BELOW_BYTES:
            memory_savers = "off"
        else:
            memory_savers = "offload" if total < OFFLOAD_BELOW_BYTES else "slicing"
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
        **from_pretrained_kwargs: passed on (e.g. ``revision``, ``cache_dir``, ``variant``).

    Returns:
        A diffusers pipeline; ``pipe.nbhelpers_info`` is a :class:`LoadInfo` describing it.

    Raises:
        ConfigurationError: ``stand_in`` (or ``NBHELPERS_STAND_IN``) is not a stand-in.
        UnknownModelError: the name is not in the catalog and is neither a hub id nor a folder.
        ModelLoadError: the weights could not be found or downloaded (the message says how to go offline).
    """
    resolved = resolve_stand_in(stand_in)
    source, spec, is_local = _resolve_source(model, resolved)
    if fast_path is not None:  # refused before any download: unknown name, a toy stand-in, a UNet it does not fit
        from nbhelpers.perf.fast_paths import check_fast_path_for

        fast_path = check_fast_path_for(fast_path, spec, resolved).name
    target_device = pick_device(device)
    torch_dtype = pick_dtype(target_device, dtype)
    kwargs: dict[str, Any] = {"torch_dtype": torch_dtype, **from_pretrained_kwargs}
    if not safety_checker:
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    if not is_local and spec is not None and spec.fp16_variant and torch_dtype == torch.float16:
        kwargs.setdefault("variant", "fp16")

    kind = _folder_kind(Path(source)) if is_local else ("deci-hub" if spec and spec.unet_kind == "flexible" else "")
    if spec is not None:
        pipeline_cls = pipeline_class(spec)
    elif kind in ("deci-hub", "flexible"):  # a folder outside the catalog that holds a flexible UNet
        pipeline_cls = DeciDiffusionPipeline
    else:
        pipeline_cls = DiffusionPipeline
    if kind == "deci-hub":
        unet_kwargs = {k: v for k, v in from_pretrained_kwargs.items() if k in _MODEL_KWARGS}
        unet = _load_flexible_unet(source, is_local, torch_dtype, unet_kwargs)
        kwargs.pop("variant", None)
        pipe = _from_pretrained(pipeline_cls, source, is_local, unet=unet, **kwargs)
    else:
        pipe = _from_pretrained(pipeline_cls, source, is_local, **kwargs)

    if scheduler is not None:
        swap_scheduler(pipe, scheduler)
    savers = _apply_memory_savers(pipe, target_device, memory_savers)
    if fast_path is not None:  # before optimize: fused QKV projections and compiled code must see the fused weights
        from nbhelpers.perf.fast_paths import apply_fast_path

        hub_kwargs = {
            k: v for k, v in from_pretrained_kwargs.items() if k in ("cache_dir", "token", "local_files_only")
        }
        apply_fast_path(pipe, fast_path, stand_in=resolved, **hub_kwargs)
    if optimize is not None:
        from nbhelpers.perf.optimize import optimize_pipeline

        optimize_pipeline(pipe, optimize)
    pipe.set_progress_bar_config(disable=not progress)
    pipe.nbhelpers_info = LoadInfo(
        source=source,
        spec=spec,
        stand_in=resolved,
        device=target_device,
        dtype=torch_dtype,
        memory_savers=savers,
        fast_path=fast_path,
    )
    return pipe


def load_info(pipe: DiffusionPipeline) -> LoadInfo | None:
    """The :class:`LoadInfo` of a pipeline loaded by :func:`load_pipeline` (``None`` for other pipelines)."""
    return getattr(pipe, "nbhelpers_info", None)
