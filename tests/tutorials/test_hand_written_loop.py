"""Notebook 01's hand-written denoising loop makes the same picture as ``pipe(...)``, for SD and DeciDiffusion.

The loop lives in the notebook, where the learner reads it; this test runs that very cell (it only imports and
defines ``generate_by_hand``) against the tiny stand-ins, so the notebook's claim "same picture" is checked on every
run and breaks if either the loop or the pipeline changes.
"""

from __future__ import annotations

import ast
from pathlib import Path

import jupytext
import numpy as np
import pytest
import torch

from nbhelpers.loading import load_pipeline

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "01_text_to_image.py"
PROMPT, SEED, STEPS = "an owl on a branch", 3, 5


def notebook_function(name: str):
    """Run the notebook's code cell that defines ``name`` and return the function (the cell must hold only
    imports and definitions, so running it does nothing else)."""
    cells = [c.source for c in jupytext.read(NOTEBOOK).cells if c.cell_type == "code" and f"def {name}(" in c.source]
    assert len(cells) == 1, f"expected one cell of {NOTEBOOK.name} defining {name}"
    tree = ast.parse(cells[0])
    allowed = (ast.Import, ast.ImportFrom, ast.FunctionDef)
    assert all(isinstance(node, allowed) for node in tree.body), "the cell may only import and define"
    namespace: dict = {}
    exec(compile(tree, str(NOTEBOOK), "exec"), namespace)
    return namespace[name]


@pytest.fixture(scope="module")
def generate_by_hand():
    return notebook_function("generate_by_hand")


def _pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=int)


@pytest.mark.parametrize(
    ("model", "rescale", "predicts", "guesses"),
    [("sd-v1-5", 0.0, "epsilon", 0), ("deci-v1", 0.7, "v_prediction", STEPS)],  # PNDM gives no x0 guess
)
def test_the_loop_by_hand_makes_pipes_picture(generate_by_hand, model, rescale, predicts, guesses):
    # No safety checker: the tiny one has random weights and could black out pipe()'s picture at random.
    pipe = load_pipeline(model, stand_in="tiny", device="cpu", progress=False, safety_checker=False)
    assert pipe.scheduler.config.prediction_type == predicts
    side = pipe.unet.config.sample_size * pipe.vae_scale_factor
    settings = {"guidance_scale": 7.5, "guidance_rescale": rescale}
    expected = pipe(
        PROMPT,
        num_inference_steps=STEPS,
        height=side,
        width=side,
        generator=torch.Generator().manual_seed(SEED),
        **settings,
    ).images[0]
    x0_guesses: list = []
    by_hand = generate_by_hand(pipe, PROMPT, seed=SEED, steps=STEPS, side=side, x0_guesses=x0_guesses, **settings)
    assert by_hand.size == expected.size
    assert np.abs(_pixels(by_hand) - _pixels(expected)).max() <= 1  # one level of rounding at most
    assert len(x0_guesses) == guesses

    # The comparison can fail: another seed gives another picture.
    other_seed = generate_by_hand(pipe, PROMPT, seed=SEED + 1, steps=STEPS, side=side, **settings)
    assert np.abs(_pixels(other_seed) - _pixels(expected)).max() > 1


def test_the_rescale_step_matters_for_decidiffusion(generate_by_hand):
    """Without its guidance_rescale step the loop would not match DeciDiffusion's pipe(): the test above checks it."""
    pipe = load_pipeline("deci-v1", stand_in="tiny", device="cpu", progress=False, safety_checker=False)
    side = pipe.unet.config.sample_size * pipe.vae_scale_factor
    kept = generate_by_hand(pipe, PROMPT, seed=SEED, steps=STEPS, side=side, guidance_rescale=0.7)
    dropped = generate_by_hand(pipe, PROMPT, seed=SEED, steps=STEPS, side=side, guidance_rescale=0.0)
    assert np.abs(_pixels(kept) - _pixels(dropped)).max() > 1
