"""The conventions both trainers follow: setting names and values, how seeds are mixed, optimizers by name.

Settings (``DreamBoothConfig`` and ``ToyTrainingConfig`` fields, hence ``nbhelpers dreambooth`` and
``nbhelpers toy-train`` flags) use diffusers' training-script names for the same meaning:

- ``max_train_steps``: optimizer steps of the run (toy-train: of its main stage, the denoiser; its other stages
  are ``vae_steps`` and ``decoder_steps``);
- ``checkpointing_steps``: steps between resumable checkpoints;
- ``learning_rate``, ``seed``;
- ``mixed_precision``: the compute precision of training, one of :data:`MIXED_PRECISION` (toy-train computes in
  fp32; ``save_precision`` is the precision of the weights it writes);
- optimizers by the names of :data:`OPTIMIZERS` (``transformers.TrainingArguments.optim`` spells them the same).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only make_optimizer needs torch; see there
    import torch

#: ``mixed_precision`` values: "auto" (fp16 on CUDA, none elsewhere), "no", "fp16", "bf16"
MIXED_PRECISION = ("auto", "no", "fp16", "bf16")
#: optimizers by name: PyTorch's AdamW, bitsandbytes' 8-bit AdamW
OPTIMIZERS = ("adamw_torch", "adamw_8bit")

#: a prime: seeds mixed with it stay distinct for any realistic number of epochs or steps
_SEED_STRIDE = 1_000_003
#: the most processes a run may have: each takes its own random stream (see :func:`process_seed`)
MAX_PROCESSES = 1024


def mix_seed(seed: int, *parts: int) -> int:
    """One seed from a run's seed and counters (epoch, step, index, ...), the same in every process and resume:
    ``((seed * P + part0) * P + part1) ...`` with the prime ``P = 1_000_003``. Every derived random stream of both
    trainers comes from here, so a stream is a function of the run's seed and where the run is."""
    mixed = seed
    for part in parts:
        mixed = mixed * _SEED_STRIDE + part
    return mixed


def process_seed(seed: int, process_index: int) -> int:
    """``seed`` made distinct for each process of a multi-process run (the same as ``seed`` times
    :data:`MAX_PROCESSES` in process 0), so that processes draw different noise from the same step's seed."""
    if not 0 <= process_index < MAX_PROCESSES:
        raise ValueError(f"process_index must be in [0, {MAX_PROCESSES}); got {process_index}")
    return seed * MAX_PROCESSES + process_index


def make_optimizer(
    name: str, parameters: Iterable[torch.nn.Parameter], *, learning_rate: float, weight_decay: float, fused: bool
) -> torch.optim.Optimizer:
    """The optimizer :data:`OPTIMIZERS` names. ``fused`` (CUDA): PyTorch's one-kernel AdamW, which updates in place
    without whole-model temporaries.

    Raises:
        ImportError: ``"adamw_8bit"`` without bitsandbytes installed.
        ValueError: an unknown name.
    """
    if name == "adamw_8bit":
        # Lazy: bitsandbytes is the optional [cuda-extras] extra.
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(list(parameters), lr=learning_rate, weight_decay=weight_decay)
    if name == "adamw_torch":  # fused=None off CUDA: PyTorch's default there (the same numbers as fused=False)
        # Lazy: the settings dataclasses read this module's names (MIXED_PRECISION), and `nbhelpers dreambooth
        # --help` must not load torch; whoever makes an optimizer has loaded torch already.
        import torch

        return torch.optim.AdamW(
            list(parameters), lr=learning_rate, weight_decay=weight_decay, fused=True if fused else None
        )
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}; got {name!r}")
