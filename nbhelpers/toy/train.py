"""Train the toy "shapes" models: ``nbhelpers toy-train --model sd`` (or ``deci``).

Three stages, each deterministic for a fixed seed and thread count, and two steps that finish the run; each is a
function of the :class:`ToyRun` the stages share (models, data, random generator, checkpoint, losses):

1. :func:`train_vae`: the VAE learns to reconstruct 64 px shapes pictures through 16x16x4 latents (MSE + a small
   KL term); :func:`encode_latents` then encodes every picture and scales the latents to unit variance;
2. :func:`train_denoiser`: the denoiser learns the captions: SD-style (``UNet2DConditionModel``, epsilon
   prediction, SD v1's scaled-linear betas, sampled with DDIM) or DeciDiffusion-style (the flexible UNet,
   v-prediction, cosine betas rescaled to zero terminal SNR, DDIM with trailing timesteps, as the real model's
   scheduler config). The text encoder's word embeddings train with it; 10% of captions are dropped so
   classifier-free guidance has an unconditional branch to steer from;
3. :func:`finetune_decoder`: the VAE's decoder alone trains on, encoder frozen: the latents the denoiser learned
   stay the same and the pictures get sharper;
4. :func:`assemble` puts the parts into a pipeline and :func:`record` scores it and writes its folder.

The settings, :class:`ToyTrainingConfig`, live in :mod:`nbhelpers.toy.config` (torch-free, for ``--help``) and
are importable from here too. They share their names with ``nbhelpers dreambooth``
(:mod:`nbhelpers.training.conventions`): the denoiser stage, the main one, trains ``max_train_steps`` steps at
``learning_rate``; a checkpoint is written every ``checkpointing_steps`` steps.

Long runs are resumable: the models, optimiser, learning-rate schedule, random generator and place in the shuffled
data go atomically to ``<output_dir>.checkpoint.safetensors`` (tensors in safetensors, the rest as JSON in its
header: :mod:`nbhelpers.training.state`; nothing in it can run code when read); a run started again with the same
settings continues from there and ends with the same weights as an uninterrupted run (same thread count). A
checkpoint that cannot be read, or is not one of this trainer's, is reported in one line and the run starts from
the beginning; ``<output_dir>.checkpoint.pt``, the pickle of earlier versions, is never loaded. The short decoder
stage is not checkpointed: a run killed in it resumes from the denoiser's last checkpoint. The checkpoint is
deleted once the pipeline folder is written.

The result is an ordinary pipeline folder in the hub repos' layout (``model_index.json``, ``vae/``,
``text_encoder/``, ``tokenizer/``, ``scheduler/``, and ``unet/`` or DeciDiffusion's ``flexible_unet/``),
written atomically, with ``training.json`` (settings, time, the loss of every step, and the accuracy of its
pictures over the 36 captions at guidance 1 and 5).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from diffusers.training_utils import compute_snr
from transformers import CLIPTextConfig, CLIPTextModel

from nbhelpers.atomic import atomic_folder, write_json_atomic
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
from nbhelpers.toy.config import RENAMED_SETTINGS as RENAMED_SETTINGS  # re-exported: it lived here
from nbhelpers.toy.config import ToyTrainingConfig, ToyTrainingConfigError
from nbhelpers.toy.evaluate import accuracy, score_pipeline
from nbhelpers.toy.pipelines import trained_toy_dir
from nbhelpers.toy.shapes import Scene, make_scenes
from nbhelpers.training.conventions import make_optimizer, mix_seed
from nbhelpers.training.state import (
    UnreadableState,
    check_optimizer_state,
    check_same_keys,
    check_tensors,
    load_state_file,
    save_state_file,
)

#: the checkpoint beside ``<output_dir>``, and the pickle name of earlier versions (never loaded)
CHECKPOINT_SUFFIX = ".checkpoint.safetensors"
PICKLED_CHECKPOINT_SUFFIX = ".checkpoint.pt"
#: the optimiser of every stage (:data:`nbhelpers.training.conventions.OPTIMIZERS`)
OPTIMIZER = "adamw_torch"


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


def _check_place(state: Any, count: int) -> None:
    """Raise :class:`UnreadableState` unless ``state`` is a saved :class:`_Batches` place in ``count`` items."""
    order, position = (state.get("order"), state.get("position")) if isinstance(state, dict) else (None, None)
    if not isinstance(order, torch.Tensor) or order.shape != (count,) or not isinstance(position, int):
        raise UnreadableState(f"its place in the data is not one in {count} pictures")


def _optimise(
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
    optimizer, schedule = _optimiser_and_schedule(parameters, steps, learning_rate)
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


def _optimiser_and_schedule(
    parameters: list[torch.nn.Parameter], steps: int, learning_rate: float
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    optimizer = make_optimizer(OPTIMIZER, parameters, learning_rate=learning_rate, weight_decay=1e-4, fused=False)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps, eta_min=learning_rate * 0.05)
    return optimizer, schedule


def finetune_decoder(
    vae: Any, pictures: torch.Tensor, config: ToyTrainingConfig, log: Callable[[str], None] = print
) -> list[float]:
    """Stage 3: train the VAE's decoder alone on ``pictures`` (``(N, 3, 64, 64)`` in ``[-1, 1]``), encoder frozen.

    The latents do not change, so the denoiser trained on them stays valid, and the pictures get sharper: the
    same move as Stability's ``sd-vae-ft-mse`` decoder. It uses its own seeded generator and the latents' means
    (no sampling), so it gives the same weights whether it runs after the denoiser stage or on its own from the
    same fp32 VAE. Returns the loss of every step."""
    generator = torch.Generator().manual_seed(mix_seed(config.seed, 1))
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
    losses = _optimise(parameters, config.decoder_steps, config.decoder_learning_rate, decoder_loss, log, "Decoder")
    vae.eval()
    vae.requires_grad_(True)
    return losses


def _forget_unseen_words(text_encoder: Any, seen_ids: torch.Tensor) -> None:
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
        raise ToyTrainingConfigError(
            f"{folder} lacks {', '.join(missing)}: continue_from takes a folder written by "
            f"`nbhelpers toy-train --model {config.model}`."
        )
    try:
        record = json.loads((folder / "training.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ToyTrainingConfigError(
            f"{folder / 'training.json'} cannot be read ({err}); train that folder again."
        ) from err
    recorded_model = record.get("settings", {}).get("model", config.model)
    if (folder / "flexible_unet").is_dir() != (config.model == "deci") or recorded_model != config.model:
        raise ToyTrainingConfigError(
            f"{folder} does not hold a toy {config.model!r} model; continue a folder trained with "
            f"--model {config.model}."
        )
    return {"folder": folder.name, "minutes": float(record.get("minutes", 0.0)), **record}


# -- the run's shared state -----------------------------------------------------------------------------------


@dataclass
class ToyModels:
    """The parts a toy pipeline is made of, and the scheduler settings it trains and samples with."""

    vae: Any
    text_encoder: Any
    unet: Any
    tokenizer: Any
    scheduler_config: dict[str, Any]
    noise_scheduler: Any


#: the scheduler settings that define training's noise (the sampler's other settings do not)
_TRAINING_SCHEDULER_KEYS = (
    "beta_start",
    "beta_end",
    "beta_schedule",
    "num_train_timesteps",
    "prediction_type",
    "rescale_betas_zero_snr",
    "trained_betas",
)


def build_models(config: ToyTrainingConfig) -> ToyModels:
    """The VAE, text encoder and denoiser, new (seeded by the global generator, in this order) or, with
    ``continue_from``, read from that folder (the new ones are still drawn first, so the generator moves alike)."""

    folder = Path(config.continue_from) if config.continue_from else None
    vae = (
        AutoencoderKL.from_pretrained(folder / "vae", dtype=torch.float32, use_safetensors=True)
        if folder
        else AutoencoderKL(**TOY_VAE_CONFIG)
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(**TOY_CLIP_TEXT_CONFIG))
    if config.model == "deci":
        unet_config = {k: v for k, v in TOY_FLEXIBLE_UNET_CONFIG.items() if not k.startswith("_")}
        unet: Any = FlexibleUNet2DConditionModel(**unet_config)
        scheduler_config = DECI_DDIM_SCHEDULER
    else:
        unet = UNet2DConditionModel(**TOY_SD_UNET_CONFIG)
        scheduler_config = {**SD_V1_PNDM_SCHEDULER, "skip_prk_steps": None}
    if folder:
        text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder", dtype=torch.float32, use_safetensors=True)
        denoiser = folder / ("flexible_unet" if config.model == "deci" else "unet")
        unet = type(unet).from_pretrained(denoiser, dtype=torch.float32, use_safetensors=True)  # never a pickle
    noise_scheduler = DDPMScheduler(**{k: v for k, v in scheduler_config.items() if k in _TRAINING_SCHEDULER_KEYS})
    tokenizer = load_clip_tokenizer(cache_root() / "clip-tokenizer")
    return ToyModels(vae, text_encoder, unet, tokenizer, scheduler_config, noise_scheduler)


class ToyCheckpoint:
    """The resumable state of a run: one file beside the output folder (see the module docstring).

    :meth:`read` takes the file only if every part fits the run (its models, data and optimiser); otherwise it
    logs what it skipped and the run starts from the beginning. A file of the same trainer with other settings
    stops the run instead: the user may have changed a setting by mistake, and would lose the work.
    """

    def __init__(self, output: Path, config: ToyTrainingConfig) -> None:
        self.path = output.with_name(output.name + CHECKPOINT_SUFFIX)
        self.pickled = output.with_name(output.name + PICKLED_CHECKPOINT_SUFFIX)
        self.settings = config.result_settings()
        self.state: dict[str, Any] | None = None

    @property
    def stage(self) -> str | None:
        """``"vae"`` or ``"unet"``: the stage the saved run stopped in (``None``: nothing to resume)."""
        return self.state["stage"] if self.state else None

    def read(self, run: ToyRun) -> None:
        if self.pickled.exists():
            run.log(
                f"Ignoring {self.pickled}: a checkpoint in the pickle format of earlier versions, never loaded "
                "(unpickling can run code)."
            )
        if not self.path.is_file():
            return
        try:
            state = load_state_file(self.path)
            if state.get("trainer") != "toy-train":
                raise UnreadableState(f"{self.path.name} is not a toy-train checkpoint")
            if state.get("settings") != self.settings:
                saved = state.get("settings")
                saved = saved if isinstance(saved, dict) else {}
                changed = sorted(k for k in self.settings if saved.get(k) != self.settings[k])
                raise ToyTrainingConfigError(
                    f"{self.path} was written by a run with other settings ({', '.join(changed)}). Train with the "
                    "same settings to resume, or delete the checkpoint (or pass another --output_dir) to start over."
                )
            self._check(state, run)
        except UnreadableState as err:
            run.log(f"Ignoring {self.path}: {err}; training from the start.")
            return
        self.state = state

    def _check(self, state: dict[str, Any], run: ToyRun) -> None:
        """Raise :class:`UnreadableState` unless every part of ``state`` loads into ``run`` as it is."""
        config, models = run.config, run.models
        stage, step = str(state.get("stage")), state.get("step")
        steps = {"vae": config.vae_steps, "unet": config.max_train_steps}.get(stage)
        if steps is None or not isinstance(step, int) or not 0 < step < steps:
            raise UnreadableState(f"its stage and step ({stage!r}, {step!r}) are not a place in this run")
        check_tensors(state.get("vae"), models.vae.state_dict(), "its VAE")
        if stage == "unet":
            check_tensors(state.get("unet"), models.unet.state_dict(), "its denoiser")
            check_tensors(state.get("text_encoder"), models.text_encoder.state_dict(), "its text encoder")
            _check_losses(state.get("vae_losses"), config.vae_steps, "its VAE losses")
        _check_losses(state.get("losses"), step, "its losses")
        _check_place(state.get("batches"), len(run.scenes))
        try:
            torch.Generator().set_state(state["generator"])
        except (KeyError, TypeError, RuntimeError):
            raise UnreadableState("its random generator state is not one") from None
        optimizer, schedule = _optimiser_and_schedule(run.stage_parameters(stage), steps, 1.0)
        check_optimizer_state(state.get("optimizer"), optimizer, "its optimiser state")
        check_same_keys(state.get("lr_schedule"), schedule.state_dict(), "its learning-rate schedule")

    def save(self, state: dict[str, Any]) -> None:
        save_state_file(self.path, {**state, "trainer": "toy-train", "settings": self.settings})


def _check_losses(losses: Any, count: int, what: str) -> None:
    if not isinstance(losses, list) or len(losses) != count or not all(isinstance(x, float) for x in losses):
        raise UnreadableState(f"{what} are not {count} numbers")


@dataclass
class ToyRun:
    """What the stages of one run share: settings, data, models, the random generator, checkpoint and results.

    The stages (:func:`train_vae`, :func:`encode_latents`, :func:`train_denoiser`, then :func:`finetune_decoder`,
    :func:`assemble`, :func:`record`) run in that order; each reads what the ones before it left here.
    """

    config: ToyTrainingConfig
    log: Callable[[str], None]
    output: Path
    started: float
    scenes: list[Scene]
    pictures: torch.Tensor
    generator: torch.Generator
    models: ToyModels
    checkpoint: ToyCheckpoint
    earlier: dict[str, Any] | None = None
    latents: torch.Tensor | None = None
    vae_accuracy: dict[str, float] = field(default_factory=dict)
    losses: dict[str, list[float]] = field(default_factory=lambda: {"vae": [], "unet": [], "decoder": []})
    minutes: float = 0.0

    def stage_parameters(self, stage: str) -> list[torch.nn.Parameter]:
        """The parameters stage ``"vae"`` or ``"unet"`` (denoiser and text encoder) trains, in optimiser order."""
        if stage == "vae":
            return list(self.models.vae.parameters())
        return list(self.models.unet.parameters()) + list(self.models.text_encoder.parameters())

    def token_ids(self, texts: list[str]) -> torch.Tensor:
        tokenizer = self.models.tokenizer
        return tokenizer(
            texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids


def start_run(config: ToyTrainingConfig, log: Callable[[str], None] = print) -> ToyRun:
    """Check the settings and the output folder, seed, draw the data, build the models, read the checkpoint."""

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
    run = ToyRun(
        config=config,
        log=log,
        output=output,
        started=started,
        scenes=scenes,
        pictures=pictures,
        generator=generator,
        models=build_models(config),
        checkpoint=ToyCheckpoint(output, config),
        earlier=earlier,
    )
    run.checkpoint.read(run)
    return run


# -- the stages -----------------------------------------------------------------------------------------------


def _vae_loss(run: ToyRun, batches: _Batches, step: int) -> torch.Tensor:
    vae = run.models.vae
    batch = run.pictures[batches.next()]
    posterior = vae.encode(batch).latent_dist
    reconstruction = vae.decode(posterior.sample(generator=run.generator)).sample
    return F.mse_loss(reconstruction, batch) + 1e-6 * posterior.kl().mean()


def _save_vae_stage(run: ToyRun, batches: _Batches, step: int, optimiser: dict[str, Any], losses: list[float]) -> None:
    run.checkpoint.save(
        {
            "stage": "vae",
            "step": step,
            "vae": run.models.vae.state_dict(),
            **optimiser,
            "losses": losses,
            "generator": run.generator.get_state(),
            "batches": batches.state_dict(),
        }
    )


def train_vae(run: ToyRun) -> None:
    """Stage 1: train the VAE (kept as it is when continuing a trained model; resumed from a checkpoint)."""
    config, vae, saved = run.config, run.models.vae, run.checkpoint.state
    batches = _Batches(len(run.scenes), config.batch_size, run.generator)  # drawn in every case: the generator moves
    if run.earlier:
        run.log(f"VAE: kept from {config.continue_from}.")
    elif saved is not None and run.checkpoint.stage == "unet":
        vae.load_state_dict(saved["vae"])
        run.losses["vae"] = list(saved["vae_losses"])
        run.log("VAE: finished in the checkpointed run.")
    else:
        resume = saved if run.checkpoint.stage == "vae" else None
        if resume is not None:
            vae.load_state_dict(resume["vae"])
            run.generator.set_state(resume["generator"])
            batches.load_state_dict(resume["batches"])
        vae.train()
        run.losses["vae"] = _optimise(
            run.stage_parameters("vae"),
            config.vae_steps,
            config.vae_learning_rate,
            partial(_vae_loss, run, batches),
            run.log,
            "VAE",
            resume=resume,
            save=partial(_save_vae_stage, run, batches),
            every=config.checkpointing_steps,
        )
    vae.eval()


def encode_latents(run: ToyRun) -> None:
    """Encode every picture (the latents' means), check 96 reconstructions with the picture reader, and scale the
    latents to unit variance with a factor stored in the VAE config (SD v1's is 0.18215)."""
    vae = run.models.vae
    with torch.no_grad():
        latents = torch.cat([vae.encode(chunk).latent_dist.mean for chunk in run.pictures.split(256)])
        decoded = vae.decode(latents[:96]).sample
    reconstructed = ((decoded.clamp(-1, 1) + 1) * 127.5).permute(0, 2, 3, 1).round().to(torch.uint8).numpy()
    run.vae_accuracy = accuracy(list(reconstructed), run.scenes[:96])
    run.log(f"VAE reconstructions read back correctly (before the decoder stage): {run.vae_accuracy['all']:.0%} of 96.")
    scaling_factor = vae.config.scaling_factor if run.earlier else float(1 / latents.std())
    vae.register_to_config(scaling_factor=scaling_factor)
    run.latents = latents * scaling_factor
    run.log(f"VAE latents {tuple(latents.shape[1:])}, scaling factor {scaling_factor:.4f}.")


def _denoiser_loss(run: ToyRun, batches: _Batches, captions: list[str], step: int) -> torch.Tensor:
    """Noise the latents of a batch at random timesteps and score the denoiser's prediction of its target (the
    noise, or the velocity for v-prediction), Min-SNR weighted when ``snr_gamma`` is set."""

    assert run.latents is not None, "encode_latents runs before the denoiser stage"
    config, models, generator = run.config, run.models, run.generator
    noise_scheduler = models.noise_scheduler
    index = batches.next()
    clean = run.latents[index]
    dropped = torch.rand(len(index), generator=generator) < config.caption_dropout
    texts = ["" if drop else captions[i] for i, drop in zip(index.tolist(), dropped.tolist(), strict=True)]
    context = models.text_encoder(run.token_ids(texts)).last_hidden_state
    noise = torch.randn(clean.shape, generator=generator)
    timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (len(index),), generator=generator)
    noisy = noise_scheduler.add_noise(clean, noise, timesteps)
    epsilon = noise_scheduler.config.prediction_type == "epsilon"
    target = noise if epsilon else noise_scheduler.get_velocity(clean, noise, timesteps)
    if not config.snr_gamma:
        return F.mse_loss(models.unet(noisy, timesteps, context).sample, target)
    weight = min_snr_weight(compute_snr(noise_scheduler, timesteps), config.snr_gamma, epsilon)
    per_picture = F.mse_loss(models.unet(noisy, timesteps, context).sample, target, reduction="none").mean((1, 2, 3))
    return (per_picture * weight).mean()


def _save_denoiser_stage(
    run: ToyRun, batches: _Batches, step: int, optimiser: dict[str, Any], losses: list[float]
) -> None:
    models = run.models
    run.checkpoint.save(
        {
            "stage": "unet",
            "step": step,
            "vae": models.vae.state_dict(),
            "vae_losses": run.losses["vae"],
            "unet": models.unet.state_dict(),
            "text_encoder": models.text_encoder.state_dict(),
            **optimiser,
            "losses": losses,
            "generator": run.generator.get_state(),
            "batches": batches.state_dict(),
        }
    )


def train_denoiser(run: ToyRun) -> None:
    """Stage 2: train the text encoder and the denoiser together on the captions (resumed from a checkpoint)."""
    config, models = run.config, run.models
    batches = _Batches(len(run.scenes), config.batch_size, run.generator)
    resume = run.checkpoint.state if run.checkpoint.stage == "unet" else None
    if resume is not None:
        models.unet.load_state_dict(resume["unet"])
        models.text_encoder.load_state_dict(resume["text_encoder"])
        run.generator.set_state(resume["generator"])
        batches.load_state_dict(resume["batches"])
    models.unet.train()
    models.text_encoder.train()
    captions = [scene.caption for scene in run.scenes]
    run.losses["unet"] = _optimise(
        run.stage_parameters("unet"),
        config.max_train_steps,
        config.learning_rate,
        partial(_denoiser_loss, run, batches, captions),
        run.log,
        "UNet",
        resume=resume,
        save=partial(_save_denoiser_stage, run, batches),
        every=config.checkpointing_steps,
    )
    models.unet.eval()
    models.text_encoder.eval()


def assemble(run: ToyRun) -> Any:
    """The trained parts as a ``StableDiffusionPipeline`` (or ``DeciDiffusionPipeline``) with a DDIM sampler; the
    embeddings of words no caption used are zeroed first."""

    models = run.models
    captions = sorted({scene.caption for scene in run.scenes})
    _forget_unseen_words(models.text_encoder, run.token_ids(captions + [""]))
    common = {
        "vae": models.vae,
        "text_encoder": models.text_encoder,
        "tokenizer": models.tokenizer,
        "safety_checker": None,
        "feature_extractor": None,
        "requires_safety_checker": False,
    }
    if run.config.model == "deci":
        pipe = DeciDiffusionPipeline(unet=models.unet, scheduler=DDIMScheduler(**models.scheduler_config), **common)
    else:
        scheduler = DDIMScheduler(**{k: v for k, v in models.scheduler_config.items() if k != "skip_prk_steps"})
        pipe = StableDiffusionPipeline(unet=models.unet, scheduler=scheduler, **common)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def record(run: ToyRun, pipe: Any) -> Path:
    """Score the pipeline (``config.evaluate``), write its folder with ``training.json`` atomically, and delete the
    checkpoint (nothing is left to resume). Returns the folder."""

    config, output = run.config, run.output
    metrics: dict[str, Any] = {}
    if config.evaluate:
        with torch.no_grad():
            metrics = {f"guidance {g:g}": score_pipeline(pipe, guidance_scale=g) for g in (1.0, 5.0)}
        run.log(f"Accuracy over 36 prompts x 2 seeds: {metrics}")
    with atomic_folder(output) as staging:
        pipe.to(torch.float16 if config.save_precision == "fp16" else torch.float32).save_pretrained(staging)
        if config.model == "deci":
            # The hub repo keeps the denoiser in flexible_unet/, which is where the loader looks for it.
            (staging / "unet").rename(staging / "flexible_unet")
        write_clip_tokenizer(staging / "tokenizer")
        _drop_local_paths(staging)
        write_json_atomic(
            staging / "training.json",
            {
                "settings": asdict(config),
                "optimizer": OPTIMIZER,
                "minutes": round(run.minutes, 2),
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "vae_reconstruction_accuracy": run.vae_accuracy,
                "accuracy_36_prompts_2_seeds_20_steps": metrics,
                "final_loss": float(np.mean(run.losses["unet"][-100:])),
                "losses": {stage: [round(x, 6) for x in values] for stage, values in run.losses.items()},
                **({"continued_from": run.earlier} if run.earlier else {}),
            },
        )
    run.checkpoint.path.unlink(missing_ok=True)
    run.log(f"Trained in {run.minutes:.1f} min; wrote {output}.")
    return output


def train_toy_model(config: ToyTrainingConfig, log: Callable[[str], None] = print) -> Path:
    """Train a toy model as ``config`` says and write its pipeline folder; return the folder."""
    run = start_run(config, log)
    train_vae(run)
    encode_latents(run)
    train_denoiser(run)
    if config.decoder_steps:
        run.losses["decoder"] = finetune_decoder(run.models.vae, run.pictures, config, log)
    run.minutes = (time.perf_counter() - run.started) / 60 + (run.earlier["minutes"] if run.earlier else 0)
    return record(run, assemble(run))
