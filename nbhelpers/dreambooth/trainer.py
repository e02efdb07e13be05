"""DreamBooth fine-tuning of Stable Diffusion (LoRA by default, or the full UNet) on a few subject photos.

    from nbhelpers.dreambooth import DreamBoothConfig, DreamBoothConfigError, train_dreambooth
    result = train_dreambooth(DreamBoothConfig("photos/", "runs/dog", max_train_steps=400))
    pipe.load_lora_weights(result.weights_dir)

It runs through ``accelerate``, so the same code trains on one GPU or several
(``accelerate launch -m nbhelpers dreambooth --instance-dir photos/ --output-dir runs/dog``). Checkpoints
(``checkpoints/checkpoint-<step>``, written to a temporary folder and renamed) let a stopped run resume at
the same step; ``train_log.csv`` holds the loss of every step exactly once.
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from nbhelpers.atomic import atomic_folder, atomic_open, write_json_atomic
from nbhelpers.dreambooth.config import DreamBoothConfig, DreamBoothConfigError
from nbhelpers.dreambooth.data import DreamBoothDataset, collate, image_files, load_images
from nbhelpers.generation import Generation, generate

logger = logging.getLogger(__name__)

TEXT_ENCODER_LORA_MODULES = ("q_proj", "k_proj", "v_proj", "out_proj")


@dataclass
class TrainingResult:
    """What a run produced: ``weights_dir`` is ``lora/`` (load with ``pipe.load_lora_weights``) or
    ``pipeline/`` (load with ``load_pipeline(folder)``); ``losses`` is ``[(step, loss), ...]``."""

    output_dir: Path
    weights_dir: Path
    global_step: int
    resumed_from: int
    losses: list[tuple[int, float]] = field(default_factory=list)
    validation_images: list[Path] = field(default_factory=list)


def latest_checkpoint(output_dir: str | os.PathLike[str]) -> tuple[int, Path] | None:
    """``(step, folder)`` of the newest complete checkpoint in ``output_dir/checkpoints``, or ``None``."""
    folder = Path(output_dir) / "checkpoints"
    found = [(int(p.name.split("-")[1]), p) for p in folder.glob("checkpoint-*") if p.name.split("-")[1].isdigit()]
    return max(found) if found else None


def _allow_new_mixed_precision(mixed_precision: str) -> None:
    """Let a second run in the same process (a notebook) use another mixed precision than the first.

    accelerate keeps one process-wide state and refuses a change of precision; in a single process that state
    holds nothing else worth keeping, so it is cleared. Distributed runs (``accelerate launch``) are untouched.
    """
    from accelerate.state import AcceleratorState, PartialState

    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") != mixed_precision and PartialState().num_processes == 1:
        AcceleratorState._reset_state()


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


class DreamBoothTrainer:
    """Sets up models, data, optimizer and accelerator for one :class:`DreamBoothConfig`; ``train()`` runs it.

    Args:
        config: the run's settings (validated here).
        pipe: an already loaded base pipeline (default: ``load_pipeline(config.model, tiny=config.tiny)``); it
            is trained in place (moved to fp32, and to fp16/bf16 frozen weights under mixed precision).
    """

    def __init__(self, config: DreamBoothConfig, pipe: Any = None) -> None:
        from accelerate import Accelerator
        from accelerate.utils import set_seed
        from diffusers import DDPMScheduler

        config.validate()
        self.config = config
        self.output_dir = Path(config.output_dir)
        _allow_new_mixed_precision(config.mixed_precision)
        self.accelerator = Accelerator(
            mixed_precision=config.mixed_precision, gradient_accumulation_steps=config.gradient_accumulation_steps
        )
        check_launch(self.accelerator.num_processes)
        set_seed(config.seed)
        min_side = max(8, config.resolution // 2)
        instance_images = load_images(config.instance_data_dir, min_side=min_side)
        if pipe is None:
            from nbhelpers.loading import load_pipeline

            pipe = load_pipeline(config.model, tiny=config.tiny, device=self.accelerator.device, dtype=torch.float32,
                                 safety_checker=False, memory_savers="off", progress=False)
        if pipe.unet.dtype != torch.float32 or pipe.unet.device != self.accelerator.device:
            # trained weights must be fp32 (frozen ones are re-cast below) and everything on the training device
            pipe.to(self.accelerator.device, torch.float32)
        self.pipe = pipe
        class_images = self._class_images(min_side) if config.with_prior_preservation else None
        self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        self.unet, self.text_encoder, self.vae = pipe.unet, pipe.text_encoder, pipe.vae
        self._set_up_trainable()
        self._cast_frozen_weights()
        self.dataset = DreamBoothDataset(
            instance_images, config.instance_prompt, pipe.tokenizer, config.resolution, class_images=class_images,
            class_prompt=config.effective_class_prompt, center_crop=config.center_crop,
            random_flip=config.random_flip, seed=config.seed,
        )
        self.dataloader = torch.utils.data.DataLoader(self.dataset, batch_size=config.train_batch_size, shuffle=True,
                                                      collate_fn=collate, drop_last=False)
        self.optimizer = self._optimizer()
        prepared = self.accelerator.prepare(self.unet, self.optimizer, self.dataloader,
                                            *([self.text_encoder] if config.train_text_encoder else []))
        self.unet, self.optimizer, self.dataloader = prepared[:3]
        if config.train_text_encoder:
            self.text_encoder = prepared[3]

    # -- setup ---------------------------------------------------------------------------------------------
    def _render(self, prompt: str, seed: int, **settings: Any) -> Generation:
        """One image at the training resolution with the model's published defaults (under autocast)."""
        with torch.no_grad(), self.accelerator.autocast():
            return generate(self.pipe, prompt, seed=seed, height=self.config.resolution,
                            width=self.config.resolution, **settings)

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
                    0, folder / f"class-{index:05d}.png")
        self.accelerator.wait_for_everyone()
        return load_images(folder, min_side=min_side)[: config.num_class_images]

    def _set_up_trainable(self) -> None:
        from peft import LoraConfig

        config = self.config
        self.vae.requires_grad_(False)
        self.text_encoder.requires_grad_(config.train_text_encoder and not config.use_lora)
        self.unet.requires_grad_(not config.use_lora)
        if config.use_lora:
            names = [name for name, _ in self.unet.named_modules()]
            missing = [m for m in config.lora_target_modules
                       if not any(n == m or n.endswith("." + m) for n in names)]  # peft's matching rule
            if missing:
                raise DreamBoothConfigError(
                    f"lora_target_modules {missing} name no module of the UNet; use attention projections such "
                    "as to_q, to_k, to_v, to_out.0 (or proj_in, proj_out, ff.net.2)."
                )
            self.unet.add_adapter(LoraConfig(r=config.lora_rank, lora_alpha=config.lora_rank,
                                             init_lora_weights="gaussian",
                                             target_modules=list(config.lora_target_modules)))
            if config.train_text_encoder:
                self.text_encoder.add_adapter(LoraConfig(r=config.lora_rank, lora_alpha=config.lora_rank,
                                                         init_lora_weights="gaussian",
                                                         target_modules=list(TEXT_ENCODER_LORA_MODULES)))
        if config.gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
            if config.train_text_encoder:
                self.text_encoder.gradient_checkpointing_enable()
        self.vae.eval()
        if not config.train_text_encoder:
            self.text_encoder.eval()

    @property
    def weight_dtype(self) -> torch.dtype:
        """The dtype of frozen weights: fp16/bf16 under mixed precision, else fp32."""
        return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.config.mixed_precision, torch.float32)

    def _cast_frozen_weights(self) -> None:
        """Under mixed precision keep frozen weights (VAE, untrained text encoder, LoRA's base UNet) in half
        precision, as diffusers' training scripts do, while every trained parameter stays fp32."""
        from diffusers.training_utils import cast_training_params

        dtype = self.weight_dtype
        if dtype == torch.float32:
            return
        self.vae.to(dtype=dtype)
        if self.config.use_lora or not self.config.train_text_encoder:
            self.text_encoder.to(dtype=dtype)
        if self.config.use_lora:
            self.unet.to(dtype=dtype)
            trained = [self.unet] + ([self.text_encoder] if self.config.train_text_encoder else [])
            cast_training_params(trained, dtype=torch.float32)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """The parameters the optimizer updates."""
        modules = [self.unet] + ([self.text_encoder] if self.config.train_text_encoder else [])
        return [p for module in modules for p in module.parameters() if p.requires_grad]

    def _optimizer(self) -> torch.optim.Optimizer:
        parameters = self.trainable_parameters()
        learning_rate = self.config.effective_learning_rate
        if self.config.use_8bit_adam:
            if torch.cuda.is_available():
                try:
                    import bitsandbytes as bnb

                    return bnb.optim.AdamW8bit(parameters, lr=learning_rate)
                except ImportError:
                    logger.warning("use_8bit_adam: bitsandbytes is not installed (pip install bitsandbytes); "
                                   "using torch.optim.AdamW.")
            else:
                logger.warning("use_8bit_adam needs a CUDA GPU; using torch.optim.AdamW.")
        return torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=1e-2)

    # -- one step ------------------------------------------------------------------------------------------
    def compute_loss(self, batch: dict[str, Any], noise: torch.Tensor | None = None,
                     timesteps: torch.Tensor | None = None) -> torch.Tensor:
        """The DreamBooth loss of one batch: noise-prediction MSE, plus the weighted class (prior) loss.

        ``noise`` ``(N, 4, R/8, R/8)`` and ``timesteps`` ``(N,)`` may be fixed (tests); by default random.
        """
        device = self.accelerator.device
        pixels = batch["pixels"].to(device, dtype=self.vae.dtype)
        with torch.no_grad():
            latents = self.vae.encode(pixels).latent_dist.sample() * self.vae.config.scaling_factor
        if noise is None:
            noise = torch.randn_like(latents)
        if timesteps is None:
            timesteps = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (latents.shape[0],),
                                      device=device)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        with torch.set_grad_enabled(self.config.train_text_encoder and torch.is_grad_enabled()):
            context = self.text_encoder(batch["input_ids"].to(device))[0]
        prediction = self.unet(noisy, timesteps, context).sample
        if self.noise_scheduler.config.prediction_type == "v_prediction":
            target = self.noise_scheduler.get_velocity(latents, noise, timesteps)
        else:
            target = noise
        count = batch["num_instance"]
        loss = F.mse_loss(prediction[:count].float(), target[:count].float())
        if prediction.shape[0] > count:
            prior = F.mse_loss(prediction[count:].float(), target[count:].float())
            loss = loss + self.config.prior_loss_weight * prior
        return loss

    def optimizer_step(self, loss: torch.Tensor) -> None:
        """Backward, clip to norm 1, step, zero the gradients."""
        self.accelerator.backward(loss)
        if self.accelerator.sync_gradients:
            self.accelerator.clip_grad_norm_(self.trainable_parameters(), 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    # -- the run -------------------------------------------------------------------------------------------
    def _log_path(self) -> Path:
        return self.output_dir / "train_log.csv"

    def _read_log(self, up_to_step: int) -> list[tuple[int, float]]:
        path = self._log_path()
        if not path.exists():
            return []
        with open(path, newline="") as file:
            rows = [(int(r["step"]), float(r["loss"])) for r in csv.DictReader(file)]
        return [(s, v) for s, v in rows if s <= up_to_step]

    def _write_log(self, losses: list[tuple[int, float]]) -> None:
        path = self._log_path()
        with atomic_open(path, "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["step", "loss"])
            writer.writerows(losses)

    def _save_checkpoint(self, step: int) -> None:
        """Write ``checkpoints/checkpoint-<step>`` atomically: every process saves into one staging folder,
        then the main process renames it into place and drops checkpoints beyond the limit."""
        accelerator = self.accelerator
        folder = self.output_dir / "checkpoints"
        target = folder / f"checkpoint-{step}"
        staging = folder / f".checkpoint-{step}.partial"
        if accelerator.is_main_process:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(staging))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging, target)
            limit = self.config.checkpoints_total_limit
            if limit:
                found = sorted((int(p.name.split("-")[1]), p) for p in folder.glob("checkpoint-*"))
                for _, old in found[:-limit]:
                    shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()

    def _validate(self, step: int) -> list[Path]:
        paths = []
        self.unet.eval()
        for index, prompt in enumerate(self.config.validation_prompts):
            result = self._render(prompt, self.config.seed + index,
                                  num_inference_steps=self.config.validation_inference_steps)
            path = self.output_dir / "validation" / f"step{step:06d}-{index:02d}.png"
            paths.append(result.save_one(0, path, model=f"{result.model} + DreamBooth step {step}"))
        self.unet.train()
        return paths

    def _weights_dir(self) -> Path:
        return self.output_dir / ("lora" if self.config.use_lora else "pipeline")

    def _save_weights(self) -> Path:
        from diffusers import StableDiffusionPipeline
        from diffusers.utils import convert_state_dict_to_diffusers
        from peft.utils import get_peft_model_state_dict

        unet = self.accelerator.unwrap_model(self.unet)
        if self.config.use_lora:
            unet_layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
            text_layers = None
            if self.config.train_text_encoder:
                text_layers = convert_state_dict_to_diffusers(
                    get_peft_model_state_dict(self.accelerator.unwrap_model(self.text_encoder)))
            with atomic_folder(self._weights_dir()) as staging:
                StableDiffusionPipeline.save_lora_weights(
                    staging, unet_lora_layers=unet_layers, text_encoder_lora_layers=text_layers
                )
            return self._weights_dir()
        self.pipe.unet = unet
        if self.config.train_text_encoder:
            self.pipe.text_encoder = self.accelerator.unwrap_model(self.text_encoder)
        with atomic_folder(self._weights_dir()) as staging:
            self.pipe.save_pretrained(staging)
        return self._weights_dir()

    def train(self, progress: bool = True) -> TrainingResult:
        """Train to ``max_train_steps`` (resuming from the newest checkpoint when ``config.resume``).

        Under ``accelerate launch`` with several processes every process trains on its share of the data; the
        main process alone writes the log, validation images and weights, and logs the loss averaged over
        processes (and over the micro-batches of gradient accumulation).
        """
        from tqdm.auto import tqdm

        config = self.config
        accelerator = self.accelerator
        main = accelerator.is_main_process
        start_step = 0
        checkpoint = latest_checkpoint(self.output_dir) if config.resume else None
        if checkpoint is not None:
            start_step, folder = checkpoint
            accelerator.load_state(str(folder))
        losses = self._read_log(start_step)
        if main:
            for stale in (self.output_dir / "checkpoints").glob(".checkpoint-*.partial"):
                shutil.rmtree(stale, ignore_errors=True)  # a run killed while saving a checkpoint
            self.output_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.output_dir / "config.json", config.to_dict())
            self._write_log(losses)
        validation_images: list[Path] = []
        step = start_step
        self.unet.train()
        bar = tqdm(total=config.max_train_steps, initial=step, desc="DreamBooth", disable=not (progress and main))
        torch.manual_seed(config.seed + step)
        epochs = math.ceil(max(1, config.max_train_steps - step) * config.gradient_accumulation_steps
                           / max(1, len(self.dataloader))) + 1
        micro_losses: list[torch.Tensor] = []
        for _ in range(epochs):
            for batch in self.dataloader:
                if step >= config.max_train_steps:
                    break
                with accelerator.accumulate(self.unet):
                    loss = self.compute_loss(batch)
                    self.optimizer_step(loss)
                micro_losses.append(loss.detach())
                if not accelerator.sync_gradients:
                    continue
                step += 1
                step_loss = float(accelerator.reduce(torch.stack(micro_losses).mean(), reduction="mean"))
                micro_losses = []
                losses.append((step, step_loss))
                if main:
                    with open(self._log_path(), "a", newline="") as file:
                        csv.writer(file).writerow([step, step_loss])
                bar.update(1)
                bar.set_postfix(loss=f"{step_loss:.4f}")
                if step % config.checkpointing_steps == 0 or step == config.max_train_steps:
                    self._save_checkpoint(step)
                due = step % config.validation_steps == 0 or step == config.max_train_steps
                if config.validation_prompts and due and main:
                    validation_images += self._validate(step)
        bar.close()
        accelerator.wait_for_everyone()
        weights_dir = self._save_weights() if main else self._weights_dir()
        accelerator.wait_for_everyone()
        return TrainingResult(self.output_dir, weights_dir, step, start_step, losses, validation_images)


def train_dreambooth(config: DreamBoothConfig, pipe: Any = None, progress: bool = True) -> TrainingResult:
    """Build a :class:`DreamBoothTrainer` and train; see the module docstring."""
    return DreamBoothTrainer(config, pipe=pipe).train(progress=progress)


def _run_dreambooth(args: argparse.Namespace) -> int:
    config = DreamBoothConfig(
        instance_data_dir=args.instance_dir, output_dir=args.output_dir, model=args.model,
        tiny=True if args.tiny else None, instance_prompt=args.instance_prompt, identifier=args.identifier,
        with_prior_preservation=args.prior, class_prompt=args.class_prompt, num_class_images=args.num_class_images,
        resolution=args.resolution, use_lora=not args.full, lora_rank=args.rank, learning_rate=args.learning_rate,
        max_train_steps=args.steps, train_batch_size=args.batch_size, train_text_encoder=args.train_text_encoder,
        gradient_checkpointing=args.gradient_checkpointing, use_8bit_adam=args.use_8bit_adam,
        mixed_precision=args.mixed_precision, seed=args.seed, validation_prompts=args.validation_prompt or [],
        validation_steps=args.validation_steps, checkpointing_steps=args.checkpointing_steps,
        resume=not args.no_resume, class_data_dir=args.class_dir, prior_loss_weight=args.prior_loss_weight,
        center_crop=not args.no_center_crop, random_flip=args.random_flip,
        lora_target_modules=tuple(args.lora_target_modules), gradient_accumulation_steps=args.gradient_accumulation,
        validation_inference_steps=args.validation_inference_steps,
        checkpoints_total_limit=args.checkpoints_total_limit or None,
    )
    result = train_dreambooth(config)
    from accelerate.state import PartialState

    if PartialState().is_main_process:
        print(f"Trained to step {result.global_step} (resumed from {result.resumed_from}); "
              f"weights in {result.weights_dir}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``nbhelpers dreambooth``."""
    p = subparsers.add_parser("dreambooth", help="Fine-tune SD on a few photos of a subject (LoRA or full).")
    p.add_argument("--instance-dir", required=True, help="Folder of 3-10 subject photos.")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--model", default="sd-v1-4")
    p.add_argument("--tiny", action="store_true", help="Offline tiny base model (random weights).")
    p.add_argument("--instance-prompt", default="a photo of sks dog")
    p.add_argument("--identifier", default="sks")
    p.add_argument("--prior", action="store_true", help="Prior preservation with generated class images.")
    p.add_argument("--class-prompt", default=None)
    p.add_argument("--num-class-images", type=int, default=100)
    p.add_argument("--class-dir", default=None, help="Cache of class images (default OUTPUT_DIR/class_images).")
    p.add_argument("--prior-loss-weight", type=float, default=1.0)
    p.add_argument("--resolution", type=int, default=512)
    p.add_argument("--full", action="store_true", help="Fine-tune the whole UNet instead of LoRA.")
    p.add_argument("--rank", type=int, default=4, help="LoRA rank.")
    p.add_argument("--lora-target-modules", nargs="+", default=["to_q", "to_k", "to_v", "to_out.0"],
                   metavar="MODULE", help="UNet projections LoRA adapts.")
    p.add_argument("--no-center-crop", action="store_true", help="Random crop instead of the centre.")
    p.add_argument("--random-flip", action="store_true", help="Flip images left-right at random.")
    p.add_argument("--learning-rate", type=float, default=None)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--gradient-accumulation", type=int, default=1, metavar="STEPS")
    p.add_argument("--train-text-encoder", action="store_true")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--use-8bit-adam", action="store_true")
    p.add_argument("--mixed-precision", default="no", choices=("no", "fp16", "bf16"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--validation-prompt", action="append", help="Repeat for several prompts.")
    p.add_argument("--validation-steps", type=int, default=100)
    p.add_argument("--validation-inference-steps", type=int, default=None)
    p.add_argument("--checkpointing-steps", type=int, default=100)
    p.add_argument("--checkpoints-total-limit", type=int, default=2, help="Checkpoints to keep (0: all).")
    p.add_argument("--no-resume", action="store_true", help="Start from scratch even if checkpoints exist.")
    p.set_defaults(handler=_run_dreambooth)
