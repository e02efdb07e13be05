"""The lessons, checked on the shipped toy "shapes" models: they load through the real code path, draw their
prompts (above measured bounds), guidance raises adherence, and the training script reproduces the shipped run.

Margins, not exact values: the figures measured when the models were trained are in each folder's
``training.json`` and in the README ("Toy models"); the thresholds sit well below them so that another CPU's
rounding cannot flip a test, and far above what an untrained model scores (0% shape and colour).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nbhelpers.toy.evaluate import score_pipeline, shape_word_attention
from nbhelpers.toy.pipelines import SHIPPED_TOY_DIR, TOY_MODEL_NAMES
from nbhelpers.toy.shapes import Scene

#: The catalog entry each shipped toy model stands in for.
STANDS_IN_FOR = {"sd": "sd-v1-5", "deci": "deci-v1"}
#: Lower bounds on the share of pictures (the 36 captions x 2 seeds, guidance 5, 20 DDIM steps) whose colour, shape,
#: background and all three are right. Measured when the models were trained (``training.json``): DeciDiffusion-style
#: 0.99 / 0.51 / 1.00 / 0.51; SD-style 0.44 / 0.39 / 0.46 / 0.13. Chance: 0.25 / 0.33 / 0.33 / 0.03; an untrained
#: model draws no shape at all (0). The SD-style toy is far weaker (see the README); its bounds only say "trained".
MIN_ACCURACY = {
    "deci": {"colour": 0.85, "shape": 0.38, "background": 0.9, "all": 0.35},
    "sd": {"colour": 0.3, "shape": 0.25, "background": 0.3, "all": 0.06},
}


@pytest.fixture(scope="module", params=sorted(TOY_MODEL_NAMES))
def shipped(request, tmp_path_factory):
    """``(kind, pipeline)`` of a shipped toy model, loaded by ``load_pipeline(name, toy=True)`` with an empty
    cache, so the folder inside the package is what loads."""
    from nbhelpers.loading import load_pipeline

    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("NBHELPERS_CACHE", str(tmp_path_factory.mktemp("empty-cache")))
    kind = request.param
    pipe = load_pipeline(STANDS_IN_FOR[kind], toy=True, device="cpu", progress=False)
    yield kind, pipe
    monkeypatch.undo()


def _accuracy(pipe, guidance_scale: float) -> dict[str, float]:
    with torch.no_grad():
        return score_pipeline(pipe, seeds=(0, 1), guidance_scale=guidance_scale)


def test_shipped_toy_models_load_through_the_real_code_path(shipped):
    kind, pipe = shipped
    info = pipe.nbhelpers_info
    folder = SHIPPED_TOY_DIR / TOY_MODEL_NAMES[kind]
    assert info.toy and not info.tiny and info.source == str(folder)
    assert info.label == f"{STANDS_IN_FOR[kind]} (toy model (shapes))"
    if kind == "deci":  # DeciDiffusion's layout and training: flexible_unet/, v-prediction, zero-SNR trailing DDIM
        assert (folder / "flexible_unet").is_dir() and not (folder / "unet").exists()
        assert type(pipe.unet).__name__ == "FlexibleUNet2DConditionModel"
        config = pipe.scheduler.config
        assert (config.prediction_type, config.rescale_betas_zero_snr, config.timestep_spacing) == (
            "v_prediction", True, "trailing")
    else:
        assert type(pipe.unet).__name__ == "UNet2DConditionModel"
        assert pipe.scheduler.config.prediction_type == "epsilon"
    # Shipped in fp16 (half the size), loaded in fp32 on the CPU.
    unet_folder = folder / ("flexible_unet" if kind == "deci" else "unet")
    from safetensors import safe_open

    with safe_open(unet_folder / "diffusion_pytorch_model.safetensors", "pt") as weights:
        assert weights.get_tensor(next(iter(weights.keys()))).dtype == torch.float16
    assert next(pipe.unet.parameters()).dtype == torch.float32


def test_toy_models_draw_what_the_prompt_says_and_guidance_raises_adherence(shipped):
    kind, pipe = shipped
    guided, unguided = _accuracy(pipe, 5.0), _accuracy(pipe, 1.0)
    print(kind, "guidance 5:", guided, "guidance 1:", unguided)
    for word, bound in MIN_ACCURACY[kind].items():
        assert guided[word] >= bound, (word, guided)
    assert guided["all"] > unguided["all"], (guided, unguided)


def test_shape_word_attention_is_measured_on_the_drawn_shape(shipped):
    """The DAAM measurement notebook 05 shows: a 64x64 map of the shape word and a finite ratio against the shape
    read from the picture. (The lesson itself, a ratio above 1.15, does not hold for these toy models yet: both
    measure about 0.9-1.0; see the README.)"""
    _, pipe = shipped
    ratio, image, heat = shape_word_attention(pipe, Scene(shape="square", colour="yellow", background="black"))
    assert heat.shape == (64, 64) and image.size == (64, 64)
    assert np.isfinite(ratio) and ratio > 0


@pytest.mark.parametrize("kind", sorted(TOY_MODEL_NAMES))
def test_the_training_script_reproduces_the_start_of_the_shipped_run(kind, tmp_path):
    """The shipped ``training.json`` holds the settings and the loss of every step. Run again with those settings
    (same seed, same thread count), the script's first VAE steps give the same losses: the data, the starting
    weights and the optimiser are reproduced. (The whole run, about 45 minutes on one core, is not repeated here.)"""
    from nbhelpers.toy.train import ToyTrainingConfig, train_toy_model

    recorded = json.loads((SHIPPED_TOY_DIR / TOY_MODEL_NAMES[kind] / "training.json").read_text())
    settings = {**recorded["settings"], "output_dir": str(tmp_path / "again"), "checkpoint_every": 5}
    steps = 10

    class Enough(Exception):
        pass

    # Checkpoints every 5 steps; the run is stopped at its first log line past `steps` (lines come every
    # vae_steps // 20 steps), so the checkpoint holds the losses of at least `steps` steps.
    with pytest.raises(Enough):
        train_toy_model(ToyTrainingConfig(**settings), log=lambda m: _stop_past(m, steps, Enough))
    state = torch.load(tmp_path / "again.checkpoint.pt", weights_only=False)
    again = state["losses"]
    assert len(again) >= steps
    np.testing.assert_allclose(again, recorded["losses"]["vae"][: len(again)], rtol=1e-3)


def _stop_past(message: str, steps: int, error: type[Exception]) -> None:
    """Raise ``error`` at the first "VAE step N/..." log line with N > ``steps``."""
    if message.startswith("VAE step "):
        done = int(message.split()[2].split("/")[0])
        if done > steps:
            raise error
