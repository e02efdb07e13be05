"""DreamBooth fine-tuning (notebook 03): LoRA by default, or the full UNet.

- :mod:`~nbhelpers.dreambooth.config`: ``DreamBoothConfig`` (validated settings; also the CLI's flags).
- :mod:`~nbhelpers.dreambooth.data`: instance/class images, preprocessing, data order, the example subject.
- :mod:`~nbhelpers.dreambooth.memory_plan`: the GPU memory estimate and the memory savers a run needs.
- :mod:`~nbhelpers.dreambooth.trainable`: which parameters train (LoRA adapters or the whole UNet), the rest frozen.
- :mod:`~nbhelpers.dreambooth.checkpoints`: small, atomic, resumable checkpoints that cannot run code when read.
- :mod:`~nbhelpers.dreambooth.run_log`: ``train_log.csv``, the loss of every step once.
- :mod:`~nbhelpers.dreambooth.export`: the LoRA in diffusers' and in kohya's (AUTOMATIC1111/ComfyUI) layout.
- :mod:`~nbhelpers.dreambooth.trainer`: ``DreamBoothTrainer``, ``train_dreambooth``.

Importing the package loads only the config (no torch): the names that need torch, diffusers and accelerate
(trainer, memory plan, checkpoints) are imported when first used, so ``nbhelpers dreambooth --help`` answers at once.

    from nbhelpers.dreambooth import DreamBoothConfig, train_dreambooth
    result = train_dreambooth(DreamBoothConfig("photos/", "runs/dog", max_train_steps=400))
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nbhelpers.dreambooth.config import DreamBoothConfig, DreamBoothConfigError
from nbhelpers.lazy_exports import lazy_exports

if TYPE_CHECKING:  # the lazy names below, for type checkers and IDEs
    from nbhelpers.dreambooth.checkpoints import CheckpointError, latest_checkpoint
    from nbhelpers.dreambooth.memory_plan import MemoryPlan, MemoryPlanError, plan_memory
    from nbhelpers.dreambooth.trainer import DreamBoothTrainer, TrainingDiverged, TrainingResult, train_dreambooth

#: names imported on first use (PEP 562), as in ``nbhelpers/__init__.py``: their modules load torch, diffusers and
#: accelerate, which ``nbhelpers dreambooth --help`` (it needs only the config) should not
_LAZY_EXPORTS: dict[str, str] = {
    "CheckpointError": "nbhelpers.dreambooth.checkpoints",
    "latest_checkpoint": "nbhelpers.dreambooth.checkpoints",
    "MemoryPlan": "nbhelpers.dreambooth.memory_plan",
    "MemoryPlanError": "nbhelpers.dreambooth.memory_plan",
    "plan_memory": "nbhelpers.dreambooth.memory_plan",
    "DreamBoothTrainer": "nbhelpers.dreambooth.trainer",
    "TrainingDiverged": "nbhelpers.dreambooth.trainer",
    "TrainingResult": "nbhelpers.dreambooth.trainer",
    "train_dreambooth": "nbhelpers.dreambooth.trainer",
}

__all__ = [
    "CheckpointError",
    "DreamBoothConfig",
    "DreamBoothConfigError",
    "DreamBoothTrainer",
    "MemoryPlan",
    "MemoryPlanError",
    "TrainingDiverged",
    "TrainingResult",
    "latest_checkpoint",
    "plan_memory",
    "train_dreambooth",
]


__getattr__, __dir__ = lazy_exports(__name__, _LAZY_EXPORTS)
