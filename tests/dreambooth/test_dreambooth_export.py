"""The kohya-layout LoRA file (AUTOMATIC1111, ComfyUI) draws the same images as the diffusers LoRA folder."""

import numpy as np
from safetensors import safe_open

from nbhelpers.dreambooth import DreamBoothConfig, train_dreambooth
from nbhelpers.dreambooth.data import make_synthetic_subject
from nbhelpers.loading import load_pipeline


def _draw(pipe):
    import torch

    return pipe(
        "a photo of sks dog",
        generator=torch.Generator().manual_seed(0),
        num_inference_steps=2,
        height=64,
        width=64,
        output_type="np",
    ).images


def test_kohya_export_loads_back_and_draws_the_same_images(tmp_path):
    subject = make_synthetic_subject(tmp_path / "subject", count=2, size=64)
    result = train_dreambooth(
        DreamBoothConfig(
            str(subject),
            str(tmp_path / "run"),
            stand_in="tiny",
            resolution=64,
            max_train_steps=2,
            learning_rate=5e-2,
            checkpointing_steps=2,
        ),
        progress=False,
    )
    assert result.kohya_file == tmp_path / "run" / "lora_kohya.safetensors"
    with safe_open(result.kohya_file, "pt") as file:
        keys = list(file.keys())
        alphas = {k: float(file.get_tensor(k)) for k in keys if k.endswith(".alpha")}
    assert keys and all(k.startswith("lora_unet_") for k in keys)
    assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight" in keys
    assert len(alphas) == sum(k.endswith(".lora_down.weight") for k in keys) and set(alphas.values()) == {4.0}

    base = _draw(load_pipeline("sd-v1-4", stand_in="tiny", device="cpu", progress=False))
    from_folder = load_pipeline("sd-v1-4", stand_in="tiny", device="cpu", progress=False)
    from_folder.load_lora_weights(result.weights_dir)
    from_kohya = load_pipeline("sd-v1-4", stand_in="tiny", device="cpu", progress=False)
    from_kohya.load_lora_weights(result.kohya_file)
    folder_images, kohya_images = _draw(from_folder), _draw(from_kohya)
    assert np.abs(folder_images - base).max() > 1e-3  # the LoRA changes the picture ...
    np.testing.assert_allclose(kohya_images, folder_images, atol=1e-5)  # ... and both files change it alike
