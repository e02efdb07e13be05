"""DreamBooth fine-tuning (notebook 03): LoRA by default, or the full UNet.

- :mod:`~nbhelpers.dreambooth.config`: ``DreamBoothConfig`` (validated settings).
- :mod:`~nbhelpers.dreambooth.data`: instance/class images, preprocessing, the example subject.
- :mod:`~nbhelpers.dreambooth.trainer`: ``DreamBoothTrainer``, ``train_dreambooth`` and the CLI command.

    from nbhelpers.dreambooth import DreamBoothConfig, train_dreambooth
    result = train_dreambooth(DreamBoothConfig("photos/", "runs/dog", max_train_steps=400))
"""

from nbhelpers.dreambooth.config import DreamBoothConfig, DreamBoothConfigError
from nbhelpers.dreambooth.trainer import DreamBoothTrainer, TrainingResult, latest_checkpoint, train_dreambooth

__all__ = [
    "DreamBoothConfig",
    "DreamBoothConfigError",
    "DreamBoothTrainer",
    "TrainingResult",
    "latest_checkpoint",
    "train_dreambooth",
]
