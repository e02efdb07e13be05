"""An adapter that lets torchmetrics 1.9's CLIP score run on transformers 5.

Why it exists: torchmetrics' ``clip_score`` (1.9.0, the newest release as of this writing) normalises what
``model.get_image_features(...)`` and ``model.get_text_features(...)`` return with ``.norm(...)``. In transformers
5 those methods return a ``BaseModelOutputWithPooling`` whose ``pooler_output`` holds the projected features, so
torchmetrics fails with ``AttributeError: 'BaseModelOutputWithPooling' object has no attribute 'norm'``
(https://github.com/Lightning-AI/torchmetrics/issues/3407). torchmetrics lets a callable supply the model
(``model_name_or_path=lambda: (model, processor)``); this adapter is that model, returning plain tensors.

When it can go: the fix was merged upstream (https://github.com/Lightning-AI/torchmetrics/pull/3408) but is in
no release yet (torchmetrics 1.9.0 on PyPI). Once a torchmetrics release with it is the minimum of the
``quality`` extra, pass the ``CLIPModel`` itself and delete this module. Until then it is harmless on both
sides: on transformers 4.x, or a fixed torchmetrics, the tensors pass through unchanged.
"""

from __future__ import annotations

from typing import Any

import torch


def _features(output: Any) -> torch.Tensor:
    """The projected features: the tensor itself (transformers 4.x), else its ``pooler_output`` (5.x)."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class TensorFeaturesCLIP(torch.nn.Module):
    """Wraps a transformers ``CLIPModel`` so that ``get_image_features``/``get_text_features`` return tensors.

    It exposes the wrapped model's ``config`` (torchmetrics reads ``config.text_config.max_position_embeddings``
    to truncate long prompts) and moves with ``.to(device)`` like any module.
    """

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    @property
    def config(self) -> Any:
        return self.model.config

    def get_image_features(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return _features(self.model.get_image_features(*args, **kwargs))

    def get_text_features(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return _features(self.model.get_text_features(*args, **kwargs))
