"""The CLIP score per picture: torchmetrics' own number, by hand from the features, in any batch size and input form."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmetrics.functional.multimodal import clip_score

from nbhelpers.quality.clip_score import ClipScorer, clip_scores
from nbhelpers.quality.images import as_uint8_pictures
from nbhelpers.quality.tiny_clip import TINY_CLIP_NAME, tiny_clip_path


def test_each_score_is_torchmetrics_clip_score_of_its_own_pair(tiny_scorer, pictures_and_prompts):
    pictures, prompts = pictures_and_prompts
    result = tiny_scorer.score(pictures, prompts)
    backbone = tiny_scorer.backbone
    for picture, prompt, score in zip(as_uint8_pictures(pictures), prompts, result.scores, strict=True):
        expected = clip_score(picture, prompt, model_name_or_path=lambda: (backbone.model, backbone.processor))
        assert score == pytest.approx(float(expected.detach()), abs=1e-4)


def test_scores_are_100_times_the_positive_cosine_of_clip_features(tiny_scorer, pictures_and_prompts):
    pictures, prompts = pictures_and_prompts
    backbone = tiny_scorer.backbone
    inputs = backbone.processor(text=prompts, images=pictures, return_tensors="pt", padding=True)
    with torch.no_grad():
        image_features = backbone.model.get_image_features(inputs["pixel_values"])
        text_features = backbone.model.get_text_features(inputs["input_ids"], inputs["attention_mask"])
    cosine = torch.nn.functional.cosine_similarity(image_features, text_features, dim=-1)
    by_hand = (100 * cosine).clamp(min=0).tolist()

    scores = tiny_scorer.score(pictures, prompts).scores

    assert scores == pytest.approx(by_hand, abs=1e-3)
    assert any(score > 1 for score in scores), "the check needs some positive cosines"
    assert any(score == 0 for score in scores), "negative cosines score 0 per picture, not per batch"


@pytest.mark.parametrize("batch_size", [1, 2, 8, 50])
def test_batch_size_does_not_change_scores(tiny_scorer, pictures_and_prompts, batch_size):
    pictures, prompts = pictures_and_prompts
    reference = tiny_scorer.score(pictures, prompts).scores
    scorer = ClipScorer(stand_in="tiny", device="cpu", batch_size=batch_size)
    assert scorer.score(pictures, prompts).scores == pytest.approx(reference, abs=1e-4)


def test_pil_tensor_and_array_pictures_score_the_same(tiny_scorer, pictures_and_prompts):
    pictures, prompts = pictures_and_prompts
    arrays = np.stack([np.asarray(picture, dtype=np.float32) / 255 for picture in pictures])  # output_type="np"
    tensors = torch.from_numpy(arrays).permute(0, 3, 1, 2)  # output_type="pt"
    from_pil = tiny_scorer.score(pictures, prompts).scores
    assert tiny_scorer.score(arrays, prompts).scores == pytest.approx(from_pil, abs=1e-4)
    assert tiny_scorer.score(tensors, prompts).scores == pytest.approx(from_pil, abs=1e-4)
    assert tiny_scorer.score(pictures[0], prompts[0]).scores == pytest.approx(from_pil[:1], abs=1e-4)


def test_results_name_the_backbone_and_mark_the_stand_in_as_meaningless(tiny_scorer, pictures_and_prompts):
    pictures, prompts = pictures_and_prompts
    result = tiny_scorer.score(pictures, prompts)
    assert result.backbone == TINY_CLIP_NAME
    assert result.stand_in == "tiny"
    assert "meaningless" in result.label and TINY_CLIP_NAME in result.label
    rows = result.rows()
    assert len(rows) == len(pictures)
    assert rows[0] == {
        "prompt": prompts[0],
        "clip_score": result.scores[0],
        "backbone": TINY_CLIP_NAME,
        "stand_in": "tiny, random weights",
    }


def test_a_local_folder_is_a_backbone_named_by_its_path(tiny_scorer, pictures_and_prompts):
    pictures, prompts = pictures_and_prompts
    folder = tiny_clip_path()
    result = clip_scores(pictures, prompts, backbone=folder, device="cpu")
    assert result.backbone == str(folder)
    assert result.stand_in is None and result.label == f"CLIP score ({folder})"
    assert result.scores == pytest.approx(tiny_scorer.score(pictures, prompts).scores, abs=1e-4)


def test_mismatched_prompts_and_bad_pictures_are_refused(tiny_scorer, pictures_and_prompts):
    pictures, prompts = pictures_and_prompts
    with pytest.raises(ValueError, match="one prompt per picture"):
        tiny_scorer.score(pictures, prompts[:-1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        tiny_scorer.score(torch.full((1, 3, 8, 8), 2.0), ["x"])
    with pytest.raises(ValueError, match="No pictures"):
        tiny_scorer.score([], [])
    with pytest.raises(ValueError, match="batch_size"):
        ClipScorer(stand_in="tiny", device="cpu", batch_size=0)
