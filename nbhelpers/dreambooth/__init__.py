"""DreamBooth fine-tuning (notebook 03): LoRA by default, or the full UNet.

- :mod:`~nbhelpers.dreambooth.config`: ``DreamBoothConfig`` (validated settings; also the CLI's flags).
- :mod:`~nbhelpers.dreambooth.data`: instance/class images, preprocessing, data order, the example subject.
- :mod:`~nbhelpers.dreambooth.memory_plan`: the GPU memory estimate and the memory savers a run needs.
- :mod:`~nbhelpers.dreambooth.trainable`: which parameters train (LoRA adapters or the whole UNet), the rest frozen.
- :mod:`~nbhelpers.dreambooth.checkpoints`: small, atomic, resumable checkpoints that cannot run code when read.
- :mod:`~nbhelpers.dreambooth.run_log`: ``train_log.csv``, the loss of every step once.
- :mod:`~nbhelpers.dreambooth.export`: the LoRA in diffusers' and in kohya's (AUTOMATIC1111/ComfyUI) layout.
- :mod:`~nbhelpers.dreambooth.trainer`: ``DreamBoothTrainer``, ``train_dreambooth`` and the CLI command.

    from nbhelpers.dreambooth import DreamBoothConfig, train_dreambooth
    result = train_dreambooth(DreamBoothConfig("photos/", "runs/dog", max_train_steps=400))
"""

from nbhelpers.dreambooth.checkpoints import CheckpointError, latest_checkpoint
from nbhelpers.dreambooth.config import DreamBoothConfig, DreamBoothConfigError
from nbhelpers.dreambooth.memory_plan import MemoryPlan, MemoryPlanError, plan_memory
from nbhelpers.dreambooth.trainer import DreamBoothTrainer, TrainingDiverged, TrainingResult, train_dreambooth

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
