"""DreamBooth fine-tuning of Stable Diffusion (LoRA by default, or the full UNet) on a few subject photos.

    from nbhelpers.dreambooth import DreamBoothConfig, DreamBoothConfigError, train_dreambooth
    result = train_dreambooth(DreamBoothConfig("photos/", "runs/dog", max_train_steps=400))
    pipe.load_lora_weights(result.weights_dir)

Before the first step a memory plan (:mod:`~nbhelpers.dreambooth.memory_plan`) picks the memory savers and
prints the expected peak. The run goes through ``accelerate``, so the same code trains on one GPU or several
(``accelerate launch -m nbhelpers dreambooth --instance_data_dir photos/ --output_dir runs/dog``).
Checkpoints (:mod:`~nbhelpers.dreambooth.checkpoints`) hold only what training changes, in safetensors and JSON
(reading one cannot run code); a resumed run continues exactly as the uninterrupted one (each step's data and
noise are a function of the step number). ``train_log.csv`` (:mod:`~nbhelpers.dreambooth.run_log`) holds the loss
of every step exactly once. Which parameters train, and in which precision the frozen ones are kept, is
:mod:`~nbhelpers.dreambooth.trainable`.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from diffusers import DDPMScheduler
from diffusers.optimization import get_scheduler
from tqdm.auto import tqdm

from nbhelpers.atomic import atomic_folder, write_json_atomic
from nbhelpers.dreambooth import checkpoints as ckpt
from nbhelpers.dreambooth.config import DreamBoothConfig, DreamBoothConfigError
from nbhelpers.dreambooth.data import DreamBoothDataset, EpochShuffleSampler, collate, image_files, load_images
from nbhelpers.dreambooth.export import KOHYA_FILE, peft_state_dicts, save_diffusers_lora, save_kohya_lora
from nbhelpers.dreambooth.memory_plan import MemoryPlan, plan_memory, sliced_attention
from nbhelpers.dreambooth.run_log import RunLog
from nbhelpers.dreambooth.trainable import cast_frozen_weights, named_trainable_parameters, set_up_trainable
from nbhelpers.errors import UserFacingError, ensure_writable_folder
from nbhelpers.generation import Generation, generate
from nbhelpers.loading import load_info, load_pipeline
from nbhelpers.training.conventions import make_optimizer, mix_seed, process_seed
from nbhelpers.training.state import (
    UnreadableState,
    check_optimizer_state,
    check_same_keys,
    check_tensors,
    rng_states,
    set_rng_states,
)

logger = logging.getLogger(__name__)


class TrainingDiverged(UserFacingError, RuntimeError):
    """The loss or the trained weights stopped being finite; the message names the step and the kept checkpoint."""


@dataclass
class TrainingResult:
    """What a run produced: ``weights_dir`` is ``lora/`` (load with ``pipe.load_lora_weights``) or
    ``pipeline/`` (load with ``load_pipeline(folder)``); ``kohya_file`` the A1111/ComfyUI LoRA file (LoRA runs);
    ``losses`` is ``[(step, loss), ...]``; ``plan`` the memory plan the run used."""

    output_dir: Path
    weights_dir: Path
    global_step: int
    resumed_from: int
    losses: list[tuple[int, float]] = field(default_factory=list)
    validation_images: list[Path] = field(default_factory=list)
    kohya_file: Path | None = None
    plan: MemoryPlan | None = None


def check_launch(num_processes: int) -> None:
    """Refuse a multi-process launch (``WORLD_SIZE`` > 1) that accelerate did not pick up as one.

    torchrun on a machine without GPUs starts N processes, but accelerate only joins them when
    ``ACCELERATE_USE_CPU=1``; otherwise each process would train alone and overwrite the others' files.
    """
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and num_processes != launched:
        raise DreamBoothConfigError(
            f"{launched} processes were launched but accelerate sees {num_processes}, so each would train alone "
            "and overwrite the others' files. On a machine without GPUs set ACCELERATE_USE_CPU=1 for torchrun; "
            "on GPUs launch with `accelerate launch --multi_gpu --num_processes N`."
        )


def _copy_to_cpu(value: Any) -> Any:
    """``value`` with every tensor copied to CPU memory (containers rebuilt, other values as they are)."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {key: _copy_to_cpu(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_copy_to_cpu(item) for item in value)
    return copy.copy(value)


def _accelerator(config: DreamBoothConfig) -> Any:
    """The run's ``accelerate.Accelerator``, after checking that a multi-process launch was joined."""

    # Mixed precision is applied by the trainer (torch.autocast + GradScaler), not by accelerate: accelerate's
    # choice is process-wide and cannot be changed once made (its only reset, AcceleratorState._reset_state, is
    # private), while a notebook may train twice with different precisions in one kernel.
    accelerator = Accelerator(mixed_precision="no", gradient_accumulation_steps=config.gradient_accumulation_steps)
    check_launch(accelerator.num_processes)
    return accelerator


def _load_base_pipeline(config: DreamBoothConfig, device: torch.device) -> Any:
    """The base model in fp32 on the training device, without safety checker or memory savers."""

    return load_pipeline(
        config.model,
        stand_in=config.stand_in,
        device=device,
        dtype=torch.float32,
        safety_checker=False,
        memory_savers="off",
        progress=False,
    )


class DreamBoothTrainer:
    """Sets up models, data, optimizer and accelerator for one :class:`DreamBoothConfig`; ``train()`` runs it.

    The set-up runs in this order, each step using only what the ones before made: settings checked, output
    folder checked, accelerator, photos, base pipeline, memory plan, trainable parameters
    (:mod:`~nbhelpers.dreambooth.trainable`), data, optimizer and schedule. A loop by hand is
    ``loss = trainer.compute_loss(batch, generator=...)`` then ``trainer.optimizer_step(loss)``; ``train()`` adds
    the data order, resumable checkpoints (:mod:`~nbhelpers.dreambooth.checkpoints`), the loss log
    (:mod:`~nbhelpers.dreambooth.run_log`), validation images and the saved weights. ``state_dict()`` and
    ``load_state_dict()`` take and restore what a checkpoint holds.

    Args:
        config: the run's settings (validated here).
        pipe: an already loaded base pipeline (default: ``load_pipeline(config.model, stand_in=config.stand_in)``);
            it is trained in place: trained weights become fp32, frozen ones the mixed-precision dtype.
    """

    def __init__(self, config: DreamBoothConfig, pipe: Any = None) -> None:
        config.validate()
        self.config = config
        # Before the model loads: an unwritable folder is reported now, not after loading or training.
        self.output_dir = ensure_writable_folder(config.output_dir, flag="--output_dir")
        self.run_log = RunLog(self.output_dir)
        self.accelerator = _accelerator(config)
        set_seed(config.seed)
        min_side = max(8, config.resolution // 2)
        instance_images = load_images(config.instance_data_dir, min_side=min_side)
        device = self.accelerator.device
        self.pipe = pipe if pipe is not None else _load_base_pipeline(config, device)
        self.unet, self.text_encoder, self.vae = self.pipe.unet, self.pipe.text_encoder, self.pipe.vae
        self.plan = plan_memory(config, self.unet, self.text_encoder, self.vae, device)
        if self.accelerator.is_main_process:
            print(self.plan.describe())
        if self.unet.dtype != torch.float32 or self.unet.device != device:
            # trained weights must be fp32 (frozen ones are re-cast below) and everything on the training device
            self.pipe.to(device, torch.float32)
        self.noise_scheduler = DDPMScheduler.from_config(self.pipe.scheduler.config)
        models = (self.unet, self.text_encoder, self.vae)
        set_up_trainable(*models, config, gradient_checkpointing=self.plan.gradient_checkpointing)
        cast_frozen_weights(*models, config, self.weight_dtype)
        self.dataset = DreamBoothDataset(
            instance_images,
            config.instance_prompt,
            self.pipe.tokenizer,
            config.resolution,
            class_images=self._class_images(min_side) if config.with_prior_preservation else None,
            class_prompt=config.effective_class_prompt,
            center_crop=config.center_crop,
            random_flip=config.random_flip,
            seed=config.seed,
        )
        self.dataloader: Any = torch.utils.data.DataLoader(
            self.dataset,
            batch_size=config.train_batch_size,
            sampler=EpochShuffleSampler(len(self.dataset), config.seed),
            collate_fn=collate,
            drop_last=False,
        )
        self.prompt_embeddings = self._encode_prompts() if self.plan.cache_text_embeddings else None
        optimizer = self._make_optimizer()
        self.lr_scheduler = get_scheduler(
            config.lr_scheduler,
            optimizer=optimizer,
            num_warmup_steps=config.lr_warmup_steps,
            num_training_steps=config.max_train_steps,
        )
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.plan.mixed_precision == "fp16")
        prepared = self.accelerator.prepare(
            self.unet, optimizer, self.dataloader, *([self.text_encoder] if config.train_text_encoder else [])
        )
        self.unet, self.optimizer, self.dataloader = prepared[:3]
        if config.train_text_encoder:
            self.text_encoder = prepared[3]

    # -- setup ---------------------------------------------------------------------------------------------
    def autocast(self) -> Any:
        """Autocast to the mixed-precision dtype (a no-op without mixed precision): what the UNet runs under."""
        dtype = self.weight_dtype
        return torch.autocast(self.accelerator.device.type, dtype=dtype, enabled=dtype != torch.float32)

    @contextmanager
    def _text_encoder_on_device(self) -> Iterator[None]:
        """Bring an off-loaded text encoder (cached embeddings) back to the device for a render."""
        device = self.accelerator.device
        offloaded = self.text_encoder.device != device
        if offloaded:
            self.text_encoder.to(device)
        try:
            yield
        finally:
            if offloaded:
                self.text_encoder.to("cpu")

    def _render(self, prompt: str, seed: int, **settings: Any) -> Generation:
        """One image at the training resolution with the model's published defaults (under autocast)."""
        with (
            torch.no_grad(),
            self.autocast(),
            sliced_attention(self.pipe.unet, self.plan.attention_slicing),
            self._text_encoder_on_device(),
        ):
            return generate(
                self.pipe, prompt, seed=seed, height=self.config.resolution, width=self.config.resolution, **settings
            )

    def _class_images(self, min_side: int) -> list:
        """Class images from the cache folder, generating the missing ones with the base model first."""
        config = self.config
        folder = config.class_dir
        folder.mkdir(parents=True, exist_ok=True)
        missing = config.num_class_images - len(image_files(folder))
        if missing > 0 and self.accelerator.is_main_process:
            start = len(image_files(folder))
            for index in range(start, start + missing):
                self._render(config.effective_class_prompt, config.seed + index).save_one(
                    0, folder / f"class-{index:05d}.png"
                )
        self.accelerator.wait_for_everyone()
        return load_images(folder, min_side=min_side)[: config.num_class_images]

    @property
    def weight_dtype(self) -> torch.dtype:
        """The dtype of frozen weights: fp16/bf16 under mixed precision, else fp32."""
        return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.plan.mixed_precision, torch.float32)

    def _encode_prompts(self) -> dict[str, torch.Tensor]:
        """Encode the instance (and class) prompt once; the text encoder then leaves the GPU until a render."""
        device = self.accelerator.device
        embeddings = {}
        with torch.no_grad(), self.autocast():
            for kind, ids in (("instance", self.dataset.instance_ids), ("class", self.dataset.class_ids)):
                if ids is not None:
                    embeddings[kind] = self.text_encoder(ids[None].to(device))[0]
        if device.type != "cpu":
            self.text_encoder.to("cpu")
        return embeddings

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """The parameters the optimizer updates."""
        return list(self.named_trainable_parameters().values())

    def named_trainable_parameters(self) -> dict[str, torch.nn.Parameter]:
        """``{"unet.<name>" | "text_encoder.<name>": parameter}`` of what the optimizer updates."""
        unwrap = self.accelerator.unwrap_model
        modules = {"unet": unwrap(self.unet)}
        if self.config.train_text_encoder:
            modules["text_encoder"] = unwrap(self.text_encoder)
        return named_trainable_parameters(modules)

    def _make_optimizer(self) -> torch.optim.Optimizer:
        name = self.plan.optimizer
        # fused: one kernel per step and no whole-model temporaries (what the memory plan assumes) on CUDA
        settings = {
            "learning_rate": self.config.effective_learning_rate,
            "weight_decay": 1e-2,
            "fused": self.accelerator.device.type == "cuda",
        }
        try:
            return make_optimizer(name, self.trainable_parameters(), **settings)
        except ImportError:
            logger.warning("%s: bitsandbytes is not installed (pip install bitsandbytes); using AdamW.", name)
            return make_optimizer("adamw_torch", self.trainable_parameters(), **settings)

    # -- the state a checkpoint holds ------------------------------------------------------------------------
    def _training_state(self) -> ckpt.TrainingState:
        """The live state (no copies): trained parameters, optimizer, schedule, gradient scaler, random generators."""
        return ckpt.TrainingState(
            trained_parameters=dict(self.named_trainable_parameters()),
            optimizer=self.optimizer.state_dict(),
            lr_scheduler=self.lr_scheduler.state_dict(),
            grad_scaler=self.scaler.state_dict(),
            rng=rng_states(),
        )

    def state_dict(self) -> dict[str, Any]:
        """A copy, in CPU memory, of what a checkpoint holds: ``trained_parameters``, the ``optimizer``'s,
        ``lr_scheduler``'s and ``grad_scaler``'s states and the random generators' (``rng``).
        :meth:`load_state_dict` puts it back."""
        state = self._training_state()
        return _copy_to_cpu({part.name: getattr(state, part.name) for part in dataclasses.fields(state)})

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` (or a checkpoint) holds. Every part is checked against this run before
        any is applied.

        Raises:
            UnreadableState: a part does not fit this run (other parameters, shapes, optimizer or schedule).
        """
        self._apply_training_state(ckpt.TrainingState(**state))

    def _apply_training_state(self, state: ckpt.TrainingState) -> None:
        trained = self.named_trainable_parameters()
        check_tensors(state.trained_parameters, trained, "trained parameters")
        check_optimizer_state(state.optimizer, self.optimizer)
        schedule = self.lr_scheduler.state_dict()
        check_same_keys(state.lr_scheduler, schedule, "the learning-rate schedule's state")
        if state.lr_scheduler.get("lr_lambdas") != schedule.get("lr_lambdas"):  # copied onto the schedule's lambdas
            raise UnreadableState("the learning-rate schedule's state is not this run's kind")
        check_same_keys(state.grad_scaler, self.scaler.state_dict(), "the gradient scaler's state")
        set_rng_states(state.rng)
        with torch.no_grad():
            for name, parameter in trained.items():
                parameter.copy_(state.trained_parameters[name])
        self.optimizer.load_state_dict(state.optimizer)
        self.lr_scheduler.load_state_dict(state.lr_scheduler)
        self.scaler.load_state_dict(state.grad_scaler)

    # -- one step ------------------------------------------------------------------------------------------
    def compute_loss(
        self,
        batch: dict[str, Any],
        noise: torch.Tensor | None = None,
        timesteps: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The DreamBooth loss of one batch: noise-prediction MSE, plus the weighted class (prior) loss.

        The pictures are encoded to latents, noised to random timesteps (``add_noise``: the forward diffusion),
        and the UNet, given the prompt's text embeddings, predicts the noise (or the velocity, for v-prediction
        models); the loss is the mean squared error of that prediction on the instance examples, plus
        ``prior_loss_weight`` times the same error on the class examples that follow them in the batch (prior
        preservation). ``noise`` ``(N, 4, R/8, R/8)`` and ``timesteps`` ``(N,)`` may be given (tests, a notebook
        recomputing it by hand); otherwise they, and the VAE's latent sample, are drawn from ``generator``
        (default: the global RNG).
        """
        device = self.accelerator.device
        pixels = batch["pixels"].to(device, dtype=self.vae.dtype)
        with torch.no_grad():
            latents = self.vae.encode(pixels).latent_dist.sample(generator) * self.vae.config.scaling_factor
        if noise is None:
            noise = torch.randn(latents.shape, generator=generator, device=device, dtype=latents.dtype)
        if timesteps is None:
            timesteps = torch.randint(
                0,
                self.noise_scheduler.config.num_train_timesteps,
                (latents.shape[0],),
                device=device,
                generator=generator,
            )
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        count = batch["num_instance"]
        with self.autocast():
            prediction = self.unet(noisy, timesteps, self.text_context(batch)).sample
        if self.noise_scheduler.config.prediction_type == "v_prediction":
            target = self.noise_scheduler.get_velocity(latents, noise, timesteps)
        else:
            target = noise
        loss = F.mse_loss(prediction[:count].float(), target[:count].float())
        if prediction.shape[0] > count:
            prior = F.mse_loss(prediction[count:].float(), target[count:].float())
            loss = loss + self.config.prior_loss_weight * prior
        return loss

    def text_context(self, batch: dict[str, Any]) -> torch.Tensor:
        """The text encoder's output for the batch's prompts, ``(N, 77, width)``: the cached embeddings when the
        plan caches them, else encoded now (with gradients only when the text encoder trains). Call it under
        :meth:`autocast`."""
        count, total = batch["num_instance"], batch["input_ids"].shape[0]
        if self.prompt_embeddings is not None:
            parts = [self.prompt_embeddings["instance"].expand(count, -1, -1)]
            if total > count:
                parts.append(self.prompt_embeddings["class"].expand(total - count, -1, -1))
            return torch.cat(parts)
        with torch.set_grad_enabled(self.config.train_text_encoder and torch.is_grad_enabled()):
            return self.text_encoder(batch["input_ids"].to(self.accelerator.device))[0]

    def optimizer_step(self, loss: torch.Tensor) -> None:
        """Backward; on the last micro-batch of a step also clip to norm 1, step, schedule and zero the gradients.

        With ``gradient_accumulation_steps`` > 1 call it inside ``trainer.accelerator.accumulate(trainer.unet)``,
        which tells it which micro-batch is the last (``train()`` does).
        """
        accelerator = self.accelerator
        accelerator.backward(self.scaler.scale(loss))
        if not accelerator.sync_gradients:
            return
        self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the fp16-scaled ones
        accelerator.clip_grad_norm_(self.trainable_parameters(), 1.0)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def step_generator(self, micro_step: int) -> torch.Generator:
        """The random generator of one micro-batch: a function of (seed, micro-step, process), so a resumed run
        draws the same latents, noise and timesteps as an uninterrupted one."""
        seed = process_seed(mix_seed(self.config.seed, micro_step), self.accelerator.process_index)
        return torch.Generator(self.accelerator.device).manual_seed(seed)

    # -- the run -------------------------------------------------------------------------------------------
    def _run_settings(self) -> dict[str, Any]:
        """The settings a checkpoint records and a resume must match (see ``checkpoints.MUST_MATCH``)."""
        config = self.config
        return {
            "use_lora": config.use_lora,
            "lora_rank": config.lora_rank if config.use_lora else None,
            "lora_target_modules": list(config.lora_target_modules) if config.use_lora else [],
            "train_text_encoder": config.train_text_encoder,
            "model": config.model,
            "resolution": config.resolution,
            "seed": config.seed,
        }

    def _stop_if_diverged(self, finite: bool, what: str, step: int) -> None:
        """Stop every process together when ``finite`` is false on any of them."""
        flags = self.accelerator.gather(torch.tensor([finite], device=self.accelerator.device))
        if bool(flags.all()):
            return
        kept = ckpt.latest_checkpoint(self.output_dir)
        where = (
            f"the last good checkpoint, {kept[1]}, is kept and a new run resumes from it"
            if kept
            else "no checkpoint had been written yet"
        )
        raise TrainingDiverged(
            f"The {what} became non-finite (NaN or inf) at step {step}; training stopped without saving it: "
            f"{where}. Lower learning_rate (now {self.config.effective_learning_rate:g}) and run again."
        )

    def _save_checkpoint(self, step: int, data_order: dict[str, int]) -> None:
        """Write ``checkpoints/checkpoint-<step>`` (only finite weights), then drop checkpoints beyond the limit."""
        finite = all(bool(torch.isfinite(p).all()) for p in self.trainable_parameters())
        self._stop_if_diverged(finite, "trained weights", step)
        accelerator = self.accelerator
        main = accelerator.is_main_process
        target = ckpt.checkpoint_folder(self.output_dir) / f"checkpoint-{step}"
        with ckpt.staged_checkpoint(accelerator, target) as staging:
            ckpt.save_training_state(
                staging, self._training_state(), process_index=accelerator.process_index, main=main
            )
            if main:
                run_state = {
                    "step": step,
                    "data_order": data_order,
                    "dataset_size": len(self.dataset),
                    "settings": self._run_settings(),
                }
                ckpt.write_run_state(staging, run_state, ckpt.checkpoint_files(accelerator.num_processes))
        if main:
            ckpt.prune_checkpoints(self.output_dir, self.config.checkpoints_total_limit)
        accelerator.wait_for_everyone()

    def _resume(self) -> dict[str, Any] | None:
        """Load the newest usable checkpoint and return its run state (``None``: nothing to resume); see
        :func:`~nbhelpers.dreambooth.checkpoints.find_resumable`."""

        def load(folder: Path, run_state: dict[str, Any]) -> None:
            # on the CPU, as accelerate loads it: optimizer.load_state_dict moves each state where its parameter is
            saved = ckpt.load_training_state(
                folder,
                self.named_trainable_parameters(),
                process_index=self.accelerator.process_index,
                device=torch.device("cpu"),
            )
            try:
                self._apply_training_state(saved)
            except UnreadableState as err:
                raise ckpt.UnreadableCheckpoint(str(err)) from None
            self._check_data_order(run_state, folder)

        return ckpt.find_resumable(self.output_dir, self._run_settings(), load)

    def _check_data_order(self, state: dict[str, Any], folder: Path) -> None:
        if state.get("dataset_size") != len(self.dataset):
            logger.warning(
                "%s was trained on %s instance images, this run has %s: the data order after the "
                "resume differs from an uninterrupted run's.",
                folder.name,
                state.get("dataset_size"),
                len(self.dataset),
            )

    def _validate(self, step: int) -> list[Path]:
        paths = []
        self.unet.eval()
        for index, prompt in enumerate(self.config.validation_prompts):
            result = self._render(
                prompt, self.config.seed + index, num_inference_steps=self.config.validation_inference_steps
            )
            path = self.output_dir / "validation" / f"step{step:06d}-{index:02d}.png"
            paths.append(result.save_one(0, path, model=f"{result.model} + DreamBooth step {step}"))
        self.unet.train()
        return paths

    def _stand_in_mark(self) -> str:
        """``"tiny, random weights"``, ``"toy model (shapes)"`` or ``""``: what the base model was."""

        info = load_info(self.pipe)
        return info.mark if info is not None else ""

    def _weights_dir(self) -> Path:
        return self.output_dir / ("lora" if self.config.use_lora else "pipeline")

    def _save_weights(self) -> tuple[Path, Path | None]:
        """Write the final weights: the LoRA folder and its kohya file, or the whole pipeline folder."""

        unwrap = self.accelerator.unwrap_model
        config = self.config
        if config.use_lora:
            layers = peft_state_dicts(
                unwrap(self.unet), unwrap(self.text_encoder) if config.train_text_encoder else None
            )
            save_diffusers_lora(self._weights_dir(), layers)
            kohya = None
            if config.export_kohya:
                kohya = save_kohya_lora(
                    self.output_dir / KOHYA_FILE,
                    layers,
                    alpha=config.lora_rank,
                    rank=config.lora_rank,
                    base_model=config.model,
                    stand_in=self._stand_in_mark(),
                )
            return self._weights_dir(), kohya
        self.pipe.unet = unwrap(self.unet)
        if config.train_text_encoder:
            self.pipe.text_encoder = unwrap(self.text_encoder)
        with self._text_encoder_on_device(), atomic_folder(self._weights_dir()) as staging:
            self.pipe.save_pretrained(staging)
        return self._weights_dir(), None

    def train(self, progress: bool = True) -> TrainingResult:
        """Train to ``max_train_steps`` (resuming from the newest readable checkpoint when ``config.resume``).

        Under ``accelerate launch`` with several processes every process trains on its share of the data; the
        main process alone writes the log, validation images and weights, and logs the loss averaged over
        processes (and over the micro-batches of gradient accumulation).

        Raises:
            TrainingDiverged: the loss or the weights became NaN/inf (the last good checkpoint is kept).
            CheckpointError: see :meth:`_resume`.
        """

        config, accelerator = self.config, self.accelerator
        start_step, order, losses = self._begin_run()
        validation_images: list[Path] = []
        step, epoch, skip, micro_step = start_step, order["epoch"], order["batch"], order["micro_step"]
        self.unet.train()
        main = accelerator.is_main_process
        bar = tqdm(total=config.max_train_steps, initial=step, desc="DreamBooth", disable=not (progress and main))
        micro_losses: list[torch.Tensor] = []
        while step < config.max_train_steps:
            self.dataloader.set_epoch(epoch)
            for index, batch in enumerate(self.dataloader):
                if index < skip:  # already trained on before the resume: same order, same position
                    continue
                if step >= config.max_train_steps:
                    break
                with accelerator.accumulate(self.unet):
                    loss = self.compute_loss(batch, generator=self.step_generator(micro_step))
                    self._stop_if_diverged(bool(torch.isfinite(loss.detach())), "loss", step + 1)
                    self.optimizer_step(loss)
                micro_step += 1
                micro_losses.append(loss.detach())
                if not accelerator.sync_gradients:
                    continue
                step += 1
                step_loss = float(accelerator.reduce(torch.stack(micro_losses).mean(), reduction="mean"))
                micro_losses = []
                losses.append((step, step_loss))
                bar.update(1)
                bar.set_postfix(loss=f"{step_loss:.4f}")
                position = {"epoch": epoch, "batch": index + 1, "micro_step": micro_step}
                validation_images += self._end_of_step(step, step_loss, position)
            skip = 0
            epoch += 1
        bar.close()
        accelerator.wait_for_everyone()
        weights_dir, kohya = self._save_weights() if main else (self._weights_dir(), None)
        accelerator.wait_for_everyone()
        return TrainingResult(
            self.output_dir, weights_dir, step, start_step, losses, validation_images, kohya, self.plan
        )

    def _begin_run(self) -> tuple[int, dict[str, int], list[tuple[int, float]]]:
        """Tidy after a crash, resume (``config.resume``), write ``config.json`` and the log up to the resumed step.
        Returns the step to start from, the data order there and the losses logged so far."""
        config, accelerator = self.config, self.accelerator
        if accelerator.is_main_process:
            ckpt.tidy_after_crash(self.output_dir)  # staging folders of a run killed while saving
        accelerator.wait_for_everyone()
        state = self._resume() if config.resume else None
        start_step = state["step"] if state else 0
        order = state["data_order"] if state else {"epoch": 0, "batch": 0, "micro_step": 0}
        losses = self.run_log.read(start_step)
        if accelerator.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.output_dir / "config.json", config.to_dict() | {"memory_plan": self.plan.as_dict()})
            self.run_log.rewrite(losses)
        return start_step, order, losses

    def _end_of_step(self, step: int, loss: float, position: dict[str, int]) -> list[Path]:
        """Log the step's loss; write a checkpoint and validation images when due. Returns the images' paths."""
        config, main = self.config, self.accelerator.is_main_process
        if main:
            self.run_log.append(step, loss)
        last = step == config.max_train_steps
        if step % config.checkpointing_steps == 0 or last:
            self._save_checkpoint(step, position)
        due = step % config.validation_steps == 0 or last
        return self._validate(step) if config.validation_prompts and due and main else []


def train_dreambooth(config: DreamBoothConfig, pipe: Any = None, progress: bool = True) -> TrainingResult:
    """Build a :class:`DreamBoothTrainer` and train; see the module docstring."""
    return DreamBoothTrainer(config, pipe=pipe).train(progress=progress)
