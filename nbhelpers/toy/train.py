"""Train the toy "shapes" models: ``nbhelpers toy-train --model sd`` (or ``deci``).

Three stages, each deterministic for a fixed seed and thread count:

1. the VAE learns to reconstruct 64 px shapes pictures through 16x16x4 latents (MSE + a small KL term);
2. the denoiser learns the captions: SD-style (``UNet2DConditionModel``, epsilon prediction, SD v1's
   scaled-linear betas, sampled with DDIM) or DeciDiffusion-style (the flexible UNet, v-prediction, cosine
   betas rescaled to zero terminal SNR, DDIM with trailing timesteps, as the real model's scheduler config).
   The text encoder's word embeddings train with it; 10% of captions are dropped so classifier-free guidance
   has an unconditional branch to steer from.
3. the VAE's decoder alone trains on, encoder frozen (:func:`finetune_decoder`): the latents the denoiser learned
   stay the same and the pictures get sharper.

Long runs are resumable: every ``checkpoint_every`` steps the models, optimiser, learning-rate schedule, random
generator and place in the shuffled data are written atomically to ``<output_dir>.checkpoint.pt``; a run started
again with the same settings continues from there and ends with the same weights as an uninterrupted run (same
thread count). The short decoder stage is not checkpointed: a run killed in it resumes from the denoiser's
last checkpoint. The checkpoint is deleted once the pipeline folder is written.

The result is an ordinary pipeline folder in the hub repos' layout (``model_index.json``, ``vae/``,
``text_encoder/``, ``tokenizer/``, ``scheduler/``, and ``unet/`` or DeciDiffusion's ``flexible_unet/``),
written atomically, with ``training.json`` (settings, time, the loss of every step, and the accuracy of its
pictures over the 36 captions at guidance 1 and 5).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from nbhelpers.atomic import atomic_folder, write_json_atomic
from nbhelpers.toy.evaluate import accuracy, score_pipeline
from nbhelpers.toy.pipelines import trained_toy_dir
from nbhelpers.toy.shapes import Scene, make_scenes


@dataclass
class ToyTrainingConfig:
    """How to train a toy model. Each field's help text is its documentation."""

    model: Literal["sd", "deci"] = field(
        default="sd", metadata={"help": "sd: SD v1-style UNet, epsilon; deci: flexible UNet, v-prediction, zero SNR."}
    )
    output_dir: str | None = field(
        default=None,
        metadata={
            "help": "Folder for the trained pipeline (default: $NBHELPERS_CACHE/toy/shapes-<model>, where "
            "load_pipeline(..., toy=True) looks first)."
        },
    )
    continue_from: str | None = field(
        default=None,
        metadata={
            "help": "A trained toy pipeline folder of the same model to start from: its VAE is kept (the VAE "
            "stage is skipped) and its text encoder and denoiser train on for unet_steps with a new "
            "learning-rate cycle (a warm restart). training.json keeps the earlier run's record."
        },
    )
    snr_gamma: float = field(
        default=0.0,
        metadata={
            "help": "Min-SNR loss weighting (Hang et al. 2023; diffusers' training scripts' --snr_gamma): "
            "weight min(SNR, gamma) / SNR (epsilon) or / (SNR + 1) (v-prediction). 0: off."
        },
    )
    num_scenes: int = field(default=20000, metadata={"help": "Pictures in the training set (drawn once, seeded)."})
    vae_steps: int = field(default=300, metadata={"help": "Optimiser steps of the VAE stage."})
    unet_steps: int = field(default=1200, metadata={"help": "Optimiser steps of the denoiser stage."})
    decoder_steps: int = field(
        default=300,
        metadata={"help": "Optimiser steps of the last stage: the VAE decoder alone, sharper (0: skip)."},
    )
    batch_size: int = field(default=32, metadata={"help": "Pictures per optimiser step."})
    vae_learning_rate: float = field(default=2e-3, metadata={"help": "AdamW learning rate of the VAE."})
    decoder_learning_rate: float = field(
        default=3e-4, metadata={"help": "AdamW learning rate of the decoder stage (lower: it starts trained)."}
    )
    learning_rate: float = field(default=1e-3, metadata={"help": "AdamW learning rate of the denoiser."})
    caption_dropout: float = field(default=0.1, metadata={"help": "Share of captions replaced by '' (for CFG)."})
    seed: int = field(default=0, metadata={"help": "Seed of data, initial weights and noise."})
    threads: int = field(
        default=1,
        metadata={
            "help": "torch CPU threads (results depend on it: keep it fixed). One thread per run, and the "
            "sd and deci runs side by side, uses two cores best."
        },
    )
    fp16: bool = field(default=True, metadata={"help": "Store the weights in fp16 (half the size)."})
    evaluate: bool = field(
        default=True, metadata={"help": "Score the trained model's pictures of the 36 captions (about a minute)."}
    )
    checkpoint_every: int = field(
        default=200, metadata={"help": "Optimiser steps between resumable checkpoints (0: none)."}
    )

    def validate(self) -> None:
        """Raise ``ValueError`` naming the setting that is out of range."""
        for name in ("num_scenes", "vae_steps", "unet_steps", "batch_size", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1; got {getattr(self, name)}.")
        if self.decoder_steps < 0:
            raise ValueError(f"decoder_steps must be 0 (skip) or more; got {self.decoder_steps}.")
        if self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be 0 (none) or more; got {self.checkpoint_every}.")
        for name in ("vae_learning_rate", "decoder_learning_rate", "learning_rate"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a positive finite number; got {value}.")
        if not math.isfinite(self.snr_gamma) or self.snr_gamma < 0:
            raise ValueError(f"snr_gamma must be 0 (off) or a positive number; got {self.snr_gamma}.")
        if self.continue_from is not None and not (Path(self.continue_from) / "model_index.json").is_file():
            raise ValueError(
                f"continue_from must be a trained toy pipeline folder (with model_index.json); got "
                f"{self.continue_from!r}."
            )
        if self.seed < 0:
            raise ValueError(f"seed must be 0 or more; got {self.seed}.")
        if not 0 <= self.caption_dropout < 1:
            raise ValueError(f"caption_dropout must be in [0, 1); got {self.caption_dropout}.")


def _pictures(scenes: list[Scene]) -> torch.Tensor:
    """``(N, 3, 64, 64)`` in ``[-1, 1]``, the VAE's input range."""
    array = np.stack([np.asarray(scene.render()[0], dtype=np.float32) for scene in scenes])
    return torch.from_numpy(array).permute(0, 3, 1, 2) / 127.5 - 1


class _Batches:
    """Index batches over ``count`` items: reshuffled every epoch, seeded; its place can be saved and restored."""

    def __init__(self, count: int, batch_size: int, generator: torch.Generator) -> None:
        self.count, self.batch_size, self.generator = count, batch_size, generator
        self.order = torch.randperm(count, generator=generator)
        self.position = 0

    def next(self) -> torch.Tensor:
        if self.position + self.batch_size > self.count:
            self.order, self.position = torch.randperm(self.count, generator=self.generator), 0
        batch = self.order[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"order": self.order, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.order, self.position = state["order"], state["position"]


class _Checkpoint:
    """The resumable state of a run, in one file written atomically beside the output folder."""

    def __init__(self, path: Path, config: ToyTrainingConfig) -> None:
        self.path = path
        # Everything that changes the result; output_dir and checkpoint_every do not.
        self.settings = {
            k: v for k, v in asdict(config).items() if k not in ("output_dir", "checkpoint_every", "evaluate")
        }
        self.state: dict[str, Any] | None = None
        if path.is_file():
            try:
                state = torch.load(path, map_location="cpu", weights_only=False)
            except Exception as err:  # whatever torch.load raises for a damaged file: name the file and the way out
                raise RuntimeError(
                    f"The checkpoint {path} cannot be read ({type(err).__name__}: {err}). Delete it to start over."
                ) from err
            if state.get("settings") != self.settings:
                changed = sorted(k for k in self.settings if state.get("settings", {}).get(k) != self.settings[k])
                raise ValueError(
                    f"{path} was written by a run with other settings ({', '.join(changed)}). Train with the same "
                    "settings to resume, or delete the checkpoint (or pass another --output_dir) to start over."
                )
            self.state = state

    def resumes(self, stage: str) -> dict[str, Any] | None:
        """The saved state if the run stopped inside ``stage``, else ``None``."""
        return self.state if self.state and self.state["stage"] == stage else None

    @property
    def vae_finished(self) -> bool:
        """Whether the saved run had finished the VAE stage (it was inside the UNet stage)."""
        return bool(self.state) and self.state["stage"] == "unet"

    def save(self, state: dict[str, Any]) -> None:
        from nbhelpers.atomic import atomic_open

        with atomic_open(self.path, "wb") as file:
            torch.save({**state, "settings": self.settings}, file)


def _train(
    parameters: list[torch.nn.Parameter],
    steps: int,
    learning_rate: float,
    loss_of_step: Callable[[int], torch.Tensor],
    log: Callable[[str], None],
    label: str,
    resume: dict[str, Any] | None = None,
    save: Callable[[int, dict[str, Any], list[float]], None] | None = None,
    every: int = 0,
) -> list[float]:
    """AdamW with a cosine decay; returns the loss of every step. Stops with an error if the loss diverges.

    ``resume`` (a saved state) continues from its step; ``save(step, optimiser states, losses)`` is called every
    ``every`` steps."""
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps, eta_min=learning_rate * 0.05)
    losses: list[float] = []
    first = 0
    if resume is not None:
        optimizer.load_state_dict(resume["optimizer"])
        schedule.load_state_dict(resume["lr_schedule"])
        losses, first = list(resume["losses"]), resume["step"]
        log(f"{label}: resuming at step {first + 1}/{steps}.")
    for step in range(first, steps):
        loss = loss_of_step(step)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{label}: the loss became {loss.item()} at step {step}; lower the learning rate.")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if step % max(1, steps // 20) == 0 or step == steps - 1:
            log(f"{label} step {step + 1}/{steps}: loss {np.mean(losses[-50:]):.4f}")
        if save is not None and every and (step + 1) % every == 0 and step + 1 < steps:
            save(step + 1, {"optimizer": optimizer.state_dict(), "lr_schedule": schedule.state_dict()}, losses)
    return losses


def finetune_decoder(
    vae: torch.nn.Module, pictures: torch.Tensor, config: ToyTrainingConfig, log: Callable[[str], None] = print
) -> list[float]:
    """Train the VAE's decoder alone on ``pictures`` (``(N, 3, 64, 64)`` in ``[-1, 1]``), encoder frozen.

    The latents do not change, so the denoiser trained on them stays valid, and the pictures get sharper: the
    same move as Stability's ``sd-vae-ft-mse`` decoder. It uses its own seeded generator and the latents' means
    (no sampling), so it gives the same weights whether it runs after the denoiser stage or on its own from the
    same fp32 VAE. Returns the loss of every step."""
    generator = torch.Generator().manual_seed(config.seed + 1)
    batches = _Batches(len(pictures), config.batch_size, generator)
    decoder = [vae.post_quant_conv, vae.decoder]
    vae.requires_grad_(False)
    for module in decoder:
        module.requires_grad_(True)
    with torch.no_grad():
        means = torch.cat([vae.encode(chunk).latent_dist.mean for chunk in pictures.split(256)])

    def decoder_loss(step: int) -> torch.Tensor:
        index = batches.next()
        return F.mse_loss(vae.decode(means[index]).sample, pictures[index])

    vae.train()
    parameters = [p for module in decoder for p in module.parameters()]
    losses = _train(parameters, config.decoder_steps, config.decoder_learning_rate, decoder_loss, log, "Decoder")
    vae.eval()
    vae.requires_grad_(True)
    return losses


def _forget_unseen_words(text_encoder: torch.nn.Module, seen_ids: torch.Tensor) -> None:
    """Zero the embedding rows of tokens no caption used: they never trained (still their random start), and
    zeros cost nothing in a compressed repository. Every unknown word then reads the same to the model."""
    embedding = text_encoder.get_input_embeddings().weight
    unseen = torch.ones(embedding.shape[0], dtype=torch.bool)
    unseen[seen_ids.unique()] = False
    with torch.no_grad():
        embedding[unseen] = 0


def min_snr_weight(snr: torch.Tensor, gamma: float, epsilon: bool) -> torch.Tensor:
    """Min-SNR-gamma loss weight per picture (Hang et al. 2023, as in diffusers' training scripts).

    ``snr`` is ``(batch,)``, from ``diffusers.training_utils.compute_snr``. Written as a weight on the MSE of the
    model's target, it caps the SNR-weighted loss at ``gamma``: ``min(SNR, gamma) / SNR`` for epsilon prediction
    (1 on the noisy steps, less on the nearly clean ones, which otherwise dominate: the noisy steps are where a
    picture's layout and colours are decided) and ``min(SNR, gamma) / (SNR + 1)`` for v-prediction."""
    return torch.clamp(snr, max=gamma) / (snr if epsilon else snr + 1)


def _drop_local_paths(folder: Path) -> None:
    """Remove ``_name_or_path`` from the components' ``config.json``: a model loaded with ``from_pretrained`` (as
    ``continue_from`` does) records the folder it came from, a path on the training machine that means nothing
    where the folder ships."""
    for config_file in folder.glob("*/config.json"):
        config = json.loads(config_file.read_text(encoding="utf-8"))
        if config.pop("_name_or_path", None) is not None:
            write_json_atomic(config_file, config)


def _earlier_run(config: ToyTrainingConfig) -> dict[str, Any] | None:
    """The ``training.json`` of the folder ``config.continue_from`` names (``None`` when starting afresh), after
    checking that it holds the same kind of model."""
    if config.continue_from is None:
        return None
    folder = Path(config.continue_from)
    denoiser = "flexible_unet" if config.model == "deci" else "unet"
    missing = [name for name in ("training.json", "vae", "text_encoder", denoiser) if not (folder / name).exists()]
    if missing:  # a hub or tiny pipeline folder has other shapes: only a toy-train folder can be continued
        raise ValueError(
            f"{folder} lacks {', '.join(missing)}: continue_from takes a folder written by "
            f"`nbhelpers toy-train --model {config.model}`."
        )
    try:
        record = json.loads((folder / "training.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{folder / 'training.json'} cannot be read ({err}); train that folder again.") from err
    recorded_model = record.get("settings", {}).get("model", config.model)
    if (folder / "flexible_unet").is_dir() != (config.model == "deci") or recorded_model != config.model:
        raise ValueError(
            f"{folder} does not hold a toy {config.model!r} model; continue a folder trained with "
            f"--model {config.model}."
        )
    return {"folder": folder.name, "minutes": float(record.get("minutes", 0.0)), **record}


def train_toy_model(config: ToyTrainingConfig, log: Callable[[str], None] = print) -> Path:
    """Train a toy model as ``config`` says and write its pipeline folder; return the folder."""
    from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.training_utils import compute_snr
    from transformers import CLIPTextConfig, CLIPTextModel

    from nbhelpers.errors import ensure_writable_folder
    from nbhelpers.models.configs import (
        DECI_DDIM_SCHEDULER,
        SD_V1_PNDM_SCHEDULER,
        TOY_CLIP_TEXT_CONFIG,
        TOY_FLEXIBLE_UNET_CONFIG,
        TOY_SD_UNET_CONFIG,
        TOY_VAE_CONFIG,
    )
    from nbhelpers.models.deci_pipeline import DeciDiffusionPipeline
    from nbhelpers.models.flexible_unet import FlexibleUNet2DConditionModel
    from nbhelpers.models.tiny import cache_root
    from nbhelpers.models.tokenizer import load_clip_tokenizer, write_clip_tokenizer

    config.validate()
    earlier = _earlier_run(config)
    output = Path(config.output_dir).expanduser() if config.output_dir else trained_toy_dir(config.model)
    # Checkpoints and the pipeline folder are written beside `output`: fail now, not at the first save.
    ensure_writable_folder(output.parent, flag="--output_dir")
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    started = time.perf_counter()

    scenes = make_scenes(config.num_scenes, seed=config.seed)
    pictures = _pictures(scenes)
    log(f"Data: {len(scenes)} pictures, e.g. '{scenes[0].caption}'.")

    checkpoint = _Checkpoint(output.with_name(output.name + ".checkpoint.pt"), config)

    # Stage 1: the VAE (kept as it is when continuing a trained model).
    vae = (
        AutoencoderKL.from_pretrained(Path(config.continue_from) / "vae", torch_dtype=torch.float32)
        if earlier
        else AutoencoderKL(**TOY_VAE_CONFIG)
    )
    vae_batches = _Batches(len(scenes), config.batch_size, generator)

    def vae_loss(step: int) -> torch.Tensor:
        batch = pictures[vae_batches.next()]
        posterior = vae.encode(batch).latent_dist
        reconstruction = vae.decode(posterior.sample(generator=generator)).sample
        return F.mse_loss(reconstruction, batch) + 1e-6 * posterior.kl().mean()

    def save_vae(step: int, optimiser: dict[str, Any], losses: list[float]) -> None:
        checkpoint.save(
            {
                "stage": "vae",
                "step": step,
                "vae": vae.state_dict(),
                **optimiser,
                "losses": losses,
                "generator": generator.get_state(),
                "batches": vae_batches.state_dict(),
            }
        )

    if earlier:
        vae_losses = []
        log(f"VAE: kept from {config.continue_from}.")
    elif checkpoint.vae_finished:
        vae.load_state_dict(checkpoint.state["vae"])
        vae_losses = list(checkpoint.state["vae_losses"])
        log("VAE: finished in the checkpointed run.")
    else:
        resume = checkpoint.resumes("vae")
        if resume is not None:
            vae.load_state_dict(resume["vae"])
            generator.set_state(resume["generator"])
            vae_batches.load_state_dict(resume["batches"])
        vae.train()
        vae_losses = _train(
            list(vae.parameters()),
            config.vae_steps,
            config.vae_learning_rate,
            vae_loss,
            log,
            "VAE",
            resume=resume,
            save=save_vae,
            every=config.checkpoint_every,
        )
    vae.eval()
    with torch.no_grad():
        latents = torch.cat([vae.encode(chunk).latent_dist.mean for chunk in pictures.split(256)])
        decoded = vae.decode(latents[:96]).sample
    reconstructed = ((decoded.clamp(-1, 1) + 1) * 127.5).permute(0, 2, 3, 1).round().to(torch.uint8).numpy()
    vae_accuracy = accuracy(list(reconstructed), scenes[:96])
    log(f"VAE reconstructions read back correctly (before the decoder stage): {vae_accuracy['all']:.0%} of 96.")
    # SD scales latents to unit variance with a fixed factor stored in the VAE config (0.18215 for SD v1).
    scaling_factor = vae.config.scaling_factor if earlier else float(1 / latents.std())
    vae.register_to_config(scaling_factor=scaling_factor)
    latents = latents * scaling_factor
    log(f"VAE latents {tuple(latents.shape[1:])}, scaling factor {scaling_factor:.4f}.")

    # Stage 2: text encoder + denoiser.
    tokenizer = load_clip_tokenizer(cache_root() / "clip-tokenizer")
    captions = [scene.caption for scene in scenes]
    text_encoder = CLIPTextModel(CLIPTextConfig(**TOY_CLIP_TEXT_CONFIG))
    if config.model == "deci":
        unet_config = {k: v for k, v in TOY_FLEXIBLE_UNET_CONFIG.items() if not k.startswith("_")}
        unet: torch.nn.Module = FlexibleUNet2DConditionModel(**unet_config)
        scheduler_config = DECI_DDIM_SCHEDULER
    else:
        unet = UNet2DConditionModel(**TOY_SD_UNET_CONFIG)
        scheduler_config = {**SD_V1_PNDM_SCHEDULER, "skip_prk_steps": None}
    if earlier:
        folder = Path(config.continue_from)
        text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder", torch_dtype=torch.float32)
        denoiser = folder / ("flexible_unet" if config.model == "deci" else "unet")
        unet = type(unet).from_pretrained(denoiser, torch_dtype=torch.float32)
    training_keys = (
        "beta_start",
        "beta_end",
        "beta_schedule",
        "num_train_timesteps",
        "prediction_type",
        "rescale_betas_zero_snr",
        "trained_betas",
    )
    noise_scheduler = DDPMScheduler(**{k: v for k, v in scheduler_config.items() if k in training_keys})

    def ids_of(texts: list[str]) -> torch.Tensor:
        return tokenizer(
            texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids

    unet_batches = _Batches(len(scenes), config.batch_size, generator)

    def unet_loss(step: int) -> torch.Tensor:
        index = unet_batches.next()
        clean = latents[index]
        dropped = torch.rand(len(index), generator=generator) < config.caption_dropout
        texts = ["" if drop else captions[i] for i, drop in zip(index.tolist(), dropped.tolist(), strict=True)]
        context = text_encoder(ids_of(texts)).last_hidden_state
        noise = torch.randn(clean.shape, generator=generator)
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (len(index),), generator=generator)
        noisy = noise_scheduler.add_noise(clean, noise, timesteps)
        epsilon = noise_scheduler.config.prediction_type == "epsilon"
        target = noise if epsilon else noise_scheduler.get_velocity(clean, noise, timesteps)
        if not config.snr_gamma:
            return F.mse_loss(unet(noisy, timesteps, context).sample, target)
        weight = min_snr_weight(compute_snr(noise_scheduler, timesteps), config.snr_gamma, epsilon)
        per_picture = F.mse_loss(unet(noisy, timesteps, context).sample, target, reduction="none").mean((1, 2, 3))
        return (per_picture * weight).mean()

    def save_unet(step: int, optimiser: dict[str, Any], losses: list[float]) -> None:
        checkpoint.save(
            {
                "stage": "unet",
                "step": step,
                "vae": vae.state_dict(),
                "vae_losses": vae_losses,
                "unet": unet.state_dict(),
                "text_encoder": text_encoder.state_dict(),
                **optimiser,
                "losses": losses,
                "generator": generator.get_state(),
                "batches": unet_batches.state_dict(),
            }
        )

    resume = checkpoint.resumes("unet")
    if resume is not None:
        unet.load_state_dict(resume["unet"])
        text_encoder.load_state_dict(resume["text_encoder"])
        generator.set_state(resume["generator"])
        unet_batches.load_state_dict(resume["batches"])
    unet.train()
    text_encoder.train()
    parameters = list(unet.parameters()) + list(text_encoder.parameters())
    losses = _train(
        parameters,
        config.unet_steps,
        config.learning_rate,
        unet_loss,
        log,
        "UNet",
        resume=resume,
        save=save_unet,
        every=config.checkpoint_every,
    )
    unet.eval()
    text_encoder.eval()
    decoder_losses = finetune_decoder(vae, pictures, config, log) if config.decoder_steps else []
    minutes = (time.perf_counter() - started) / 60 + (earlier["minutes"] if earlier else 0)
    _forget_unseen_words(text_encoder, ids_of(sorted(set(captions)) + [""]))

    common = {
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "safety_checker": None,
        "feature_extractor": None,
        "requires_safety_checker": False,
    }
    if config.model == "deci":
        pipe = DeciDiffusionPipeline(unet=unet, scheduler=DDIMScheduler(**scheduler_config), **common)
    else:
        scheduler = DDIMScheduler(**{k: v for k, v in scheduler_config.items() if k != "skip_prk_steps"})
        pipe = StableDiffusionPipeline(unet=unet, scheduler=scheduler, **common)
    pipe.set_progress_bar_config(disable=True)
    metrics: dict[str, Any] = {}
    if config.evaluate:
        with torch.no_grad():
            metrics = {f"guidance {g:g}": score_pipeline(pipe, guidance_scale=g) for g in (1.0, 5.0)}
        log(f"Accuracy over 36 prompts x 2 seeds: {metrics}")

    with atomic_folder(output) as staging:
        pipe.to(torch.float16 if config.fp16 else torch.float32).save_pretrained(staging)
        if config.model == "deci":
            # The hub repo keeps the denoiser in flexible_unet/, which is where the loader looks for it.
            (staging / "unet").rename(staging / "flexible_unet")
        write_clip_tokenizer(staging / "tokenizer")
        _drop_local_paths(staging)
        write_json_atomic(
            staging / "training.json",
            {
                "settings": asdict(config),
                "minutes": round(minutes, 2),
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "vae_reconstruction_accuracy": vae_accuracy,
                "accuracy_36_prompts_2_seeds_20_steps": metrics,
                "final_loss": float(np.mean(losses[-100:])),
                "losses": {
                    "vae": [round(x, 6) for x in vae_losses],
                    "unet": [round(x, 6) for x in losses],
                    "decoder": [round(x, 6) for x in decoder_losses],
                },
                **({"continued_from": earlier} if earlier else {}),
            },
        )
    checkpoint.path.unlink(missing_ok=True)  # the pipeline folder is complete: nothing left to resume
    log(f"Trained in {minutes:.1f} min; wrote {output}.")
    return output
