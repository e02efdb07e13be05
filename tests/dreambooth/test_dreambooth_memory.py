"""The DreamBooth memory plan: counted terms, savers only as needed, refusals that say what would fit."""

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from nbhelpers.dreambooth import DreamBoothConfig, DreamBoothTrainer, MemoryPlanError, plan_memory
from nbhelpers.dreambooth.data import make_synthetic_subject
from nbhelpers.dreambooth.memory_plan import GIB, count_trained_parameters
from nbhelpers.models.configs import CLIP_VIT_L_TEXT_CONFIG, SD_V1_UNET_CONFIG, SD_VAE_CONFIG

CUDA = torch.device("cuda")  # only named: every test passes the budget, so no GPU is touched


@pytest.fixture(scope="module")
def sd_v1():
    """SD v1.x's UNet, text encoder and VAE at full size on the meta device (shapes only, no memory)."""
    with torch.device("meta"):
        return (
            UNet2DConditionModel.from_config(SD_V1_UNET_CONFIG),
            CLIPTextModel(CLIPTextConfig(**CLIP_VIT_L_TEXT_CONFIG)),
            AutoencoderKL.from_config(SD_VAE_CONFIG),
        )


def _config(**overrides):
    return DreamBoothConfig("photos", "out", **overrides)


def test_lora_at_512_fits_a_t4_without_slowing_savers(sd_v1):
    plan = plan_memory(
        _config(with_prior_preservation=True), *sd_v1, CUDA, budget=int(14 * GIB), eight_bit_available=False
    )
    assert plan.mixed_precision == "fp16" and not plan.gradient_checkpointing and not plan.use_8bit_adam
    # fp16 UNet (1.6 GiB) + VAE + text encoder, plus about 2.4 GiB of counted activations at batch 2
    assert 3.5 * GIB < plan.estimate.peak < 5.5 * GIB
    assert count_trained_parameters(sd_v1[0], sd_v1[1], _config()) == 797_184  # rank 4 on the attention projections


def test_full_fine_tuning_turns_on_savers_in_order_until_it_fits(sd_v1):
    roomy = plan_memory(_config(use_lora=False), *sd_v1, CUDA, budget=int(70 * GIB), eight_bit_available=True)
    assert not (roomy.use_8bit_adam or roomy.gradient_checkpointing or roomy.cache_text_embeddings)
    t4 = plan_memory(
        _config(use_lora=False, with_prior_preservation=True),
        *sd_v1,
        CUDA,
        budget=int(13.5 * GIB),
        eight_bit_available=True,
    )
    assert t4.cache_text_embeddings and t4.use_8bit_adam and t4.estimate.peak <= 13.5 * GIB
    assert t4.estimate.optimizer == pytest.approx(2 * 859_520_964, rel=0.01)  # 8-bit moments: 2 bytes a parameter
    print(t4.describe())


def test_a_plan_that_cannot_fit_is_refused_with_what_would(sd_v1):
    with pytest.raises(MemoryPlanError, match=r"(?s)full fine-tuning at 512 px needs about .*LoRA instead"):
        plan_memory(_config(use_lora=False), *sd_v1, CUDA, budget=int(8 * GIB), eight_bit_available=False)
    smallest = plan_memory(
        _config(gradient_checkpointing=True, cache_text_embeddings=True), *sd_v1, CUDA, budget=int(70 * GIB)
    ).estimate
    budget = smallest.peak - smallest.activations // 4  # LoRA at 512 px cannot fit, a lower resolution can
    with pytest.raises(MemoryPlanError, match=r"(?s)LoRA at 512 px .*--resolution \d+"):
        plan_memory(_config(), *sd_v1, CUDA, budget=budget, eight_bit_available=False)
    kept = plan_memory(_config(memory="off"), *sd_v1, CUDA, budget=budget, eight_bit_available=False)
    assert kept.estimate.peak > budget and "What would fit" in kept.describe()  # off: reported, not refused


def test_on_a_cpu_a_full_size_model_is_refused_and_the_tiny_one_suggested(sd_v1):
    with pytest.raises(MemoryPlanError, match="not practical.*--tiny"):
        plan_memory(_config(), *sd_v1, torch.device("cpu"))


def test_gradient_checkpointing_counts_far_fewer_activation_bytes(sd_v1):
    plain = plan_memory(_config(gradient_checkpointing=False), *sd_v1, CUDA, budget=int(70 * GIB))
    checkpointed = plan_memory(_config(gradient_checkpointing=True), *sd_v1, CUDA, budget=int(70 * GIB))
    assert checkpointed.estimate.activations < 0.3 * plain.estimate.activations


def test_the_trainer_prints_its_plan_before_training_and_counts_what_it_trains(tmp_path, capsys):
    subject = make_synthetic_subject(tmp_path / "subject", count=2, size=64)
    trainer = DreamBoothTrainer(
        DreamBoothConfig(str(subject), str(tmp_path / "out"), stand_in="tiny", resolution=64, max_train_steps=1)
    )
    out = capsys.readouterr().out
    assert "Memory plan on cpu" in out and "expected peak" in out
    counted = count_trained_parameters(trainer.unet, trainer.text_encoder, trainer.config)
    assert counted == sum(p.numel() for p in trainer.trainable_parameters())
