"""Swapping a pipeline's scheduler (sampler) by a short name, keeping the noise schedule the model was trained on.

A scheduler is built ``from_config`` of the one it replaces, so the training settings travel with it: betas,
prediction type (noise or v), timestep spacing and, for DeciDiffusion, ``rescale_betas_zero_snr`` (zero terminal
SNR). ``from_config`` silently drops any setting the new class has no parameter for, and PNDM and LMS have no
``rescale_betas_zero_snr``: swapped onto a zero-terminal-SNR model they would sample a schedule whose last step is
not pure noise, which the model never saw. :func:`swap_scheduler` refuses such a swap (or, when asked, swaps and
warns) instead of dropping the setting unseen.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any

from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from nbhelpers.errors import ConfigurationError

SCHEDULERS: dict[str, type[SchedulerMixin]] = {
    "ddim": DDIMScheduler,
    "pndm": PNDMScheduler,
    "euler": EulerDiscreteScheduler,
    "euler-a": EulerAncestralDiscreteScheduler,
    "dpm++": DPMSolverMultistepScheduler,
    "lms": LMSDiscreteScheduler,
    "unipc": UniPCMultistepScheduler,
}

#: Scheduler settings that define the noise schedule a model was trained with. Any of them that the old scheduler
#: turns on (a value other than ``None`` or ``False``) must exist in the new class, or ``from_config`` drops it.
TRAINING_SCHEDULE_SETTINGS = (
    "num_train_timesteps",
    "beta_start",
    "beta_end",
    "beta_schedule",
    "trained_betas",
    "prediction_type",
    "rescale_betas_zero_snr",
    "timestep_spacing",
)


class SchedulerMismatchError(ConfigurationError):
    """The chosen scheduler cannot carry a training setting of the model's scheduler (for example zero terminal
    SNR into PNDM); the message names the setting and the schedulers that can."""


def _accepted_settings(scheduler_cls: type) -> set[str]:
    return set(inspect.signature(scheduler_cls).parameters)  # the class's __init__ parameters


def settings_lost(config: dict[str, Any], scheduler_cls: type) -> list[str]:
    """The training-schedule settings turned on in ``config`` that ``scheduler_cls`` has no parameter for (they
    would be dropped silently by ``scheduler_cls.from_config(config)``), e.g. ``["rescale_betas_zero_snr"]`` for a
    DeciDiffusion config and PNDM."""
    accepted = _accepted_settings(scheduler_cls)
    return [key for key in TRAINING_SCHEDULE_SETTINGS if config.get(key) not in (None, False) and key not in accepted]


def compatible_schedulers(config: dict[str, Any]) -> list[str]:
    """Names in :data:`SCHEDULERS` that keep every training-schedule setting of ``config``."""
    return [name for name, cls in SCHEDULERS.items() if not settings_lost(config, cls)]


def swap_scheduler(pipe: DiffusionPipeline, name: str, *, allow_schedule_change: bool = False) -> DiffusionPipeline:
    """Replace ``pipe.scheduler`` with the scheduler called ``name`` (see :data:`SCHEDULERS`), in place.

    The new scheduler is built ``from_config`` of the old one, so the noise schedule the model was trained with
    (betas, prediction type, zero-SNR rescaling, timestep spacing) carries over. Returns ``pipe``.

    Args:
        pipe: a diffusers pipeline with a ``scheduler``.
        name: a key of :data:`SCHEDULERS` (case and surrounding spaces ignored).
        allow_schedule_change: swap even when the new scheduler cannot keep a training setting (it warns then).

    Raises:
        ConfigurationError: ``name`` is not a known scheduler.
        SchedulerMismatchError: the new scheduler has no parameter for a training setting the model uses (PNDM or
            LMS on a zero-terminal-SNR model such as DeciDiffusion), unless ``allow_schedule_change``.
    """
    key = name.strip().lower()
    if key not in SCHEDULERS:
        raise ConfigurationError(f"Unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}.")
    new_cls = SCHEDULERS[key]
    config = dict(pipe.scheduler.config)
    lost = settings_lost(config, new_cls)
    if lost:
        settings = ", ".join(f"{k}={config[k]!r}" for k in lost)
        message = (
            f"{new_cls.__name__} ({key!r}) has no {', '.join(lost)}, so the model's setting {settings} would be "
            f"dropped and the model sampled on a noise schedule it was not trained on (with zero terminal SNR "
            f"dropped, the last step is no longer pure noise)."
        )
        if not allow_schedule_change:
            raise SchedulerMismatchError(
                f"{message} Choose one of {', '.join(compatible_schedulers(config))} (or, in Python, pass "
                "allow_schedule_change=True to swap_scheduler to swap anyway)."
            )
        warnings.warn(message, UserWarning, stacklevel=2)
    pipe.scheduler = new_cls.from_config(pipe.scheduler.config)
    return pipe
