"""Where trained toy "shapes" pipelines live, and which one stands in for a catalog model.

``load_pipeline("deci-v1", stand_in="toy")`` (or ``NBHELPERS_STAND_IN=toy``) loads the DeciDiffusion-style toy model
(flexible UNet, v-prediction, zero-SNR DDIM) through the same code path as the real repo; every SD v1.x entry
maps to the SD-style toy model. A toy model is looked for first in ``$NBHELPERS_CACHE/toy/<name>`` (where
``nbhelpers toy-train`` writes by default), then among the folders shipped inside the package
(``nbhelpers/toy/models/<name>``). Unlike the tiny stand-ins, toy models are trained: their 64 px pictures
follow the prompt's colour, shape and background in part (measured figures in docs/stand-ins.md and each
folder's ``training.json``), and are labelled "toy model (shapes)".
"""

from __future__ import annotations

from pathlib import Path

from nbhelpers.catalog import ModelSpec
from nbhelpers.models.tiny import cache_root

#: Toy pipeline folder name by toy kind (``nbhelpers toy-train --model sd|deci``).
TOY_MODEL_NAMES = {"sd": "shapes-sd", "deci": "shapes-deci"}
#: Folders shipped with the package.
SHIPPED_TOY_DIR = Path(__file__).resolve().parent / "models"


def toy_kind(spec: ModelSpec) -> str:
    """``"deci"`` for DeciDiffusion (flexible UNet), ``"sd"`` for every SD v1.x-shaped entry."""
    return "deci" if spec.unet_kind == "flexible" else "sd"


def trained_toy_dir(kind: str) -> Path:
    """Where ``nbhelpers toy-train --model kind`` writes by default: ``$NBHELPERS_CACHE/toy/<name>``."""
    if kind not in TOY_MODEL_NAMES:
        raise ValueError(f"Unknown toy model kind {kind!r}; use one of {sorted(TOY_MODEL_NAMES)}.")
    return cache_root() / "toy" / TOY_MODEL_NAMES[kind]


def toy_pipeline_path(spec: ModelSpec) -> Path:
    """The toy pipeline folder standing in for catalog entry ``spec``.

    Raises:
        FileNotFoundError: neither a trained nor a shipped folder exists; the message says how to train one.
    """
    kind = toy_kind(spec)
    candidates = [trained_toy_dir(kind), SHIPPED_TOY_DIR / TOY_MODEL_NAMES[kind]]
    for folder in candidates:
        if (folder / "model_index.json").is_file():
            return folder
    raise FileNotFoundError(
        f"No toy model {TOY_MODEL_NAMES[kind]!r} for {spec.name!r}: looked in "
        + " and ".join(str(c) for c in candidates)
        + f". Train it with `nbhelpers toy-train --model {kind}` (it writes to the first folder), or use "
        "stand_in='tiny' for the untrained offline stand-in."
    )
