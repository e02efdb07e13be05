"""The settings of ``nbhelpers toy-train`` (:mod:`nbhelpers.toy.train`): :class:`ToyTrainingConfig`, checked before
anything trains.

Each field's help text lives in its ``metadata``, so the command line shows it under ``--help``. Kept free of torch
(as :mod:`nbhelpers.dreambooth.config` is): ``nbhelpers toy-train --help`` imports this module, not the trainer.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from nbhelpers.errors import ConfigurationError

#: names earlier versions recorded in ``training.json`` (and took as flags), with today's
RENAMED_SETTINGS = {"unet_steps": "max_train_steps", "checkpoint_every": "checkpointing_steps"}


class ToyTrainingConfigError(ConfigurationError):
    """A toy-train setting is out of range, or a checkpoint was made with other settings; the message says what
    to change."""


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
            'load_pipeline(..., stand_in="toy") looks first).'
        },
    )
    continue_from: str | None = field(
        default=None,
        metadata={
            "help": "A trained toy pipeline folder of the same model to start from: its VAE is kept (the VAE "
            "stage is skipped) and its text encoder and denoiser train on for max_train_steps with a new "
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
    max_train_steps: int = field(
        default=1200, metadata={"help": "Optimiser steps of the denoiser stage, the main one (was --unet_steps)."}
    )
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
    save_precision: Literal["fp16", "fp32"] = field(
        default="fp16",
        metadata={"help": "Precision of the saved weights (fp16: half the size). Training computes in fp32."},
    )
    evaluate: bool = field(
        default=True, metadata={"help": "Score the trained model's pictures of the 36 captions (about a minute)."}
    )
    checkpointing_steps: int = field(
        default=200,
        metadata={"help": "Optimiser steps between resumable checkpoints (0: none; was --checkpoint_every)."},
    )

    @classmethod
    def from_record(cls, settings: dict[str, Any]) -> ToyTrainingConfig:
        """The config a ``training.json`` records under ``settings``, also one of an earlier version (its
        ``unet_steps``, ``checkpoint_every`` and ``fp16`` are today's ``max_train_steps``, ``checkpointing_steps``
        and ``save_precision``); settings that version did not have keep today's defaults."""
        values = {RENAMED_SETTINGS.get(name, name): value for name, value in settings.items()}
        if "fp16" in values:
            values["save_precision"] = "fp16" if values.pop("fp16") else "fp32"
        return cls(**values)

    def validate(self) -> None:
        """Raise :class:`ToyTrainingConfigError` naming the setting that is out of range."""
        for name in ("num_scenes", "vae_steps", "max_train_steps", "batch_size", "threads"):
            if getattr(self, name) < 1:
                raise ToyTrainingConfigError(f"{name} must be at least 1; got {getattr(self, name)}.")
        if self.decoder_steps < 0:
            raise ToyTrainingConfigError(f"decoder_steps must be 0 (skip) or more; got {self.decoder_steps}.")
        if self.checkpointing_steps < 0:
            raise ToyTrainingConfigError(
                f"checkpointing_steps must be 0 (none) or more; got {self.checkpointing_steps}."
            )
        for name in ("vae_learning_rate", "decoder_learning_rate", "learning_rate"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ToyTrainingConfigError(f"{name} must be a positive finite number; got {value}.")
        if not math.isfinite(self.snr_gamma) or self.snr_gamma < 0:
            raise ToyTrainingConfigError(f"snr_gamma must be 0 (off) or a positive number; got {self.snr_gamma}.")
        if self.continue_from is not None and not (Path(self.continue_from) / "model_index.json").is_file():
            raise ToyTrainingConfigError(
                f"continue_from must be a trained toy pipeline folder (with model_index.json); got "
                f"{self.continue_from!r}."
            )
        if self.seed < 0:
            raise ToyTrainingConfigError(f"seed must be 0 or more; got {self.seed}.")
        if not 0 <= self.caption_dropout < 1:
            raise ToyTrainingConfigError(f"caption_dropout must be in [0, 1); got {self.caption_dropout}.")
        if self.save_precision not in ("fp16", "fp32"):
            raise ToyTrainingConfigError(f"save_precision must be fp16 or fp32; got {self.save_precision!r}.")

    def result_settings(self) -> dict[str, Any]:
        """The settings that change the trained weights (a checkpoint resumes only under the same ones)."""
        ignored = ("output_dir", "checkpointing_steps", "evaluate", "save_precision")
        return {name: value for name, value in asdict(self).items() if name not in ignored}
