"""Which backbone scores: explicit names, the stand-in, the environment; the transformers-5 adapter."""

from __future__ import annotations

import pytest
import torch
import transformers
from transformers.modeling_outputs import BaseModelOutputWithPooling

from nbhelpers.errors import ConfigurationError
from nbhelpers.quality.backbones import DEFAULT_BACKBONE, load_clip_backbone, resolve_backbone
from nbhelpers.quality.transformers_compat import TensorFeaturesCLIP
from nbhelpers.stand_in import STAND_IN_VARIABLE


def test_the_default_is_clip_vit_large_unless_the_environment_asks_for_a_stand_in(monkeypatch):
    monkeypatch.delenv(STAND_IN_VARIABLE, raising=False)
    assert resolve_backbone() == (DEFAULT_BACKBONE, None)
    monkeypatch.setenv(STAND_IN_VARIABLE, "toy")
    assert resolve_backbone() == (None, "tiny")
    assert resolve_backbone("some/clip") == ("some/clip", None)  # an explicit backbone wins over the variable
    assert resolve_backbone(stand_in="none") == (DEFAULT_BACKBONE, None)


def test_a_backbone_and_a_stand_in_together_are_refused():
    with pytest.raises(ConfigurationError, match="not both"):
        resolve_backbone("openai/clip-vit-base-patch16", stand_in="tiny")
    with pytest.raises(ConfigurationError, match="not a stand-in"):
        resolve_backbone(stand_in="small")


def test_a_backbone_that_cannot_load_gets_one_clear_error(tmp_path):
    with pytest.raises(ConfigurationError, match="Cannot load the CLIP backbone"):
        load_clip_backbone(tmp_path / "empty-folder-that-is-not-there", device="cpu")


class _Transformers5Model(torch.nn.Module):
    """Returns features the way transformers 5's CLIPModel does."""

    config = "the config"

    def get_image_features(self, pixel_values):
        return BaseModelOutputWithPooling(pooler_output=pixel_values * 2)

    def get_text_features(self, input_ids, attention_mask=None):
        return BaseModelOutputWithPooling(pooler_output=input_ids + 1)


def test_the_adapter_returns_tensors_and_keeps_the_config():
    adapter = TensorFeaturesCLIP(_Transformers5Model())
    assert torch.equal(adapter.get_image_features(torch.ones(2)), torch.full((2,), 2.0))
    assert torch.equal(adapter.get_text_features(torch.zeros(2)), torch.ones(2))
    assert adapter.config == "the config"


@pytest.mark.skipif(int(transformers.__version__.split(".")[0]) < 5, reason="transformers 4.x returns tensors")
@pytest.mark.xfail(
    strict=True,
    raises=AttributeError,
    reason="torchmetrics 1.9 cannot use transformers 5's CLIPModel; when this passes, a torchmetrics release has "
    "the fix (Lightning-AI/torchmetrics#3408): delete nbhelpers.quality.transformers_compat",
)
def test_torchmetrics_still_needs_the_adapter(tiny_scorer):
    from torchmetrics.functional.multimodal import clip_score

    backbone = tiny_scorer.backbone
    clip_score(torch.zeros(3, 32, 32, dtype=torch.uint8), "x", lambda: (backbone.model.model, backbone.processor))
