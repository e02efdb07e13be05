"""The shipped prompt sets load with their counts and columns; an unknown name gets a clear error."""

from __future__ import annotations

from collections import Counter

import pytest

from nbhelpers.errors import ConfigurationError
from nbhelpers.quality.backbones import DIFFUSERS_EVALUATION_BACKBONE
from nbhelpers.quality.parti_selection import CLIP_TOKEN_LIMIT, select_prompts
from nbhelpers.quality.prompt_sets import load_prompt_set, prompt_set_names

PARTI_CATEGORIES = {
    "Abstract", "Animals", "Artifacts", "Arts", "Food & Beverage", "Illustrations", "Indoor Scenes",
    "Outdoor Scenes", "People", "Produce & Plants", "Vehicles", "World Knowledge",
}  # fmt: skip
PARTI_CHALLENGES = {
    "Basic", "Complex", "Fine-grained Detail", "Imagination", "Linguistic Structures", "Perspective",
    "Properties & Positioning", "Quantity", "Simple Detail", "Style & Format", "Writing & Symbols",
}  # fmt: skip


def test_the_names_are_listed():
    assert prompt_set_names() == ["parti", "diffusers-eval", "toy-shapes"]


def test_parti_has_four_prompts_per_category_and_every_challenge():
    parti = load_prompt_set("parti")
    assert len(parti) == 48 and len(set(parti.prompts)) == 48
    assert parti.columns == ("prompt", "category", "challenge", "note", "parti_line")
    assert Counter(parti.column("category")) == {category: 4 for category in PARTI_CATEGORIES}
    assert set(parti.column("challenge")) == PARTI_CHALLENGES
    assert parti.licence == "Apache-2.0" and "google-research/parti" in parti.source


def test_parti_prompts_fit_clip_without_truncation():
    from nbhelpers.models.tiny import cache_root
    from nbhelpers.models.tokenizer import load_clip_tokenizer

    tokenizer = load_clip_tokenizer(cache_root() / "clip-tokenizer")
    lengths = [len(tokenizer(prompt).input_ids) for prompt in load_prompt_set("parti").prompts]
    assert max(lengths) <= CLIP_TOKEN_LIMIT


def test_diffusers_eval_has_the_six_published_prompts_and_scores():
    evaluation = load_prompt_set("diffusers-eval")
    assert len(evaluation) == 6
    assert evaluation.prompts[0] == "a photo of an astronaut riding a horse on mars"
    assert evaluation.prompts[5] == "A small cabin on top of a snowy mountain in the style of Disney, artstation"
    assert evaluation.published is not None
    assert evaluation.published.backbone == DIFFUSERS_EVALUATION_BACKBONE
    assert evaluation.published.scores == {"sd-v1-4": 34.9102, "sd-v1-5": 36.2137}


def test_toy_shapes_are_the_toy_models_captions():
    toy = load_prompt_set("toy-shapes")
    assert len(toy) == 36 and toy.columns == ("prompt", "colour", "shape", "background")
    assert toy.rows[0] == {"prompt": "a red circle on a white background", "colour": "red", "shape": "circle",
                           "background": "white"}  # fmt: skip
    assert Counter(toy.column("shape")) == {"circle": 12, "square": 12, "triangle": 12}


def test_an_unknown_set_or_column_gets_a_clear_error():
    with pytest.raises(
        ConfigurationError, match="Unknown prompt set 'drawbench'; choose one of: parti, diffusers-eval, toy"
    ):
        load_prompt_set("drawbench")
    with pytest.raises(KeyError, match="no column 'category'"):
        load_prompt_set("toy-shapes").column("category")


def test_the_parti_rule_spreads_challenges_drops_long_prompts_and_is_reproducible():
    rows = [
        {"prompt": f"{category} {challenge} {index}", "category": category, "challenge": challenge}
        for category in ("A", "B")
        for challenge in ("x", "y", "z")
        for index in range(5)
    ]
    rows.append({"prompt": "A x long", "category": "A", "challenge": "x"})
    tokens = lambda text: 100 if "long" in text else 5  # noqa: E731
    chosen = select_prompts(rows, tokens, per_category=3, seed=1)
    assert chosen == select_prompts(rows, tokens, per_category=3, seed=1)
    assert [row["category"] for row in chosen] == ["A"] * 3 + ["B"] * 3
    assert sorted(row["challenge"] for row in chosen) == ["x", "x", "y", "y", "z", "z"]
    assert all("long" not in row["prompt"] for row in chosen)
    assert chosen != select_prompts(rows, tokens, per_category=3, seed=2)
