"""A resume never runs code planted in the files it reads (project issue 29).

Users are told to move checkpoint folders around (Colab, Drive), so a resume may read files it did not write; and
toy-train's checkpoint sits beside its output folder, where (under /tmp) any local user can put a file. Each test
plants a pickle whose unpickling would create a marker file (a ``__reduce__`` payload, in ``torch.save``'s format,
the one ``torch.load`` reads) in every place a resume looks, then resumes: the marker must not appear, the run must
say in its log which file it skipped, and it must go on from the previous good state.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import torch

#: Every file accelerate's ``save_state`` writes (and ``load_state`` reads) in a checkpoint folder.
ACCELERATE_FILES = (
    "custom_checkpoint_0.pkl",
    "custom_checkpoint_1.pkl",
    "optimizer.bin",
    "scheduler.bin",
    "scaler.pt",
    "random_states_0.pkl",
    "pytorch_model.bin",
    "model.safetensors",
    "sampler.bin",
    "dl_state_dict.bin",
)


class _CreatesAFile:
    """Unpickling this calls ``open(marker, "w")``: the file appears if, and only if, the pickle is loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):  # noqa: ANN204 - the pickle protocol
        return (open, (self.marker, "w"))


def plant(path: Path, marker: Path) -> None:
    """Write a ``torch.save`` file at ``path`` that would create ``marker`` when loaded with ``weights_only=False``."""
    path.unlink(missing_ok=True)
    torch.save({"state": _CreatesAFile(marker)}, path)


def test_the_payload_works_when_unpickled(tmp_path):
    """The planted file really runs code when loaded the unsafe way, so the tests below prove something."""
    marker = tmp_path / "ran"
    plant(tmp_path / "payload.pkl", marker)
    torch.load(tmp_path / "payload.pkl", weights_only=False)
    assert marker.exists()


# -- DreamBooth ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dreambooth_run(tmp_path_factory):
    """A LoRA run on the tiny model with checkpoints at steps 2 and 4 (copied by each test before it plants)."""
    from nbhelpers.dreambooth.data import make_synthetic_subject
    from nbhelpers.dreambooth.trainer import train_dreambooth

    root = tmp_path_factory.mktemp("dreambooth")
    subject = make_synthetic_subject(root / "subject", count=4, size=96)
    train_dreambooth(_dreambooth_config(subject, root / "run", max_train_steps=4), progress=False)
    return subject, root / "run"


def _dreambooth_config(subject: Path, out: Path, **overrides):
    from nbhelpers.dreambooth.config import DreamBoothConfig

    settings = {"stand_in": "tiny", "resolution": 64, "checkpointing_steps": 2, "checkpoints_total_limit": None}
    return DreamBoothConfig(str(subject), str(out), **(settings | overrides))


def _resume(subject: Path, run: Path, caplog) -> tuple[int, str]:
    """Resume ``run`` to step 5; ``(step resumed from, warnings logged)``."""
    from nbhelpers.dreambooth.trainer import train_dreambooth

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        result = train_dreambooth(_dreambooth_config(subject, run, max_train_steps=5), progress=False)
    assert result.global_step == 5
    return result.resumed_from, caplog.text


def _written_files(run: Path) -> list[str]:
    return sorted(path.name for path in (run / "checkpoints" / "checkpoint-4").iterdir())


@pytest.mark.parametrize("index", range(4))
def test_a_pickle_in_place_of_a_dreambooth_checkpoint_file_never_runs(dreambooth_run, tmp_path, caplog, index):
    """Each file the trainer wrote into its newest checkpoint, replaced by the payload in turn: the checkpoint is
    reported unreadable (naming the file) and the run resumes from the one before."""
    subject, original = dreambooth_run
    written = _written_files(original)
    if index >= len(written):
        pytest.skip(f"the checkpoint holds {len(written)} files")
    name = written[index]
    run = tmp_path / "run"
    shutil.copytree(original, run)
    marker = tmp_path / "code-ran"
    plant(run / "checkpoints" / "checkpoint-4" / name, marker)
    resumed_from, log = _resume(subject, run, caplog)
    assert not marker.exists(), f"resuming unpickled {name} and ran the code planted in it"
    assert resumed_from == 2, log
    assert "checkpoint-4" in log and name in log, log


def test_pickles_planted_under_accelerates_names_are_never_read(dreambooth_run, tmp_path, caplog):
    """accelerate's file names (which its ``load_state`` would unpickle, ``custom_checkpoint_*.pkl`` with
    ``weights_only=False``), added to the newest checkpoint: none is read, the log names them, the resume goes on."""
    subject, original = dreambooth_run
    run = tmp_path / "run"
    shutil.copytree(original, run)
    newest = run / "checkpoints" / "checkpoint-4"
    markers = {name: tmp_path / f"code-ran-{name}" for name in ACCELERATE_FILES}
    for name, marker in markers.items():
        plant(newest / name, marker)
    resumed_from, log = _resume(subject, run, caplog)
    assert not [name for name, marker in markers.items() if marker.exists()], "a planted pickle was loaded"
    assert resumed_from in (2, 4), log
    assert all(name in log for name in ACCELERATE_FILES), log


# -- toy-train ----------------------------------------------------------------------------------------------------


class _Killed(Exception):
    """Stands in for a run killed mid-way."""


def _toy_config(out: Path):
    from nbhelpers.toy.train import ToyTrainingConfig

    small = {"num_scenes": 16, "vae_steps": 3, "max_train_steps": 2, "decoder_steps": 0, "batch_size": 4}
    return ToyTrainingConfig(model="sd", output_dir=str(out), checkpointing_steps=1, evaluate=False, **small)


def test_a_pickle_planted_beside_a_toy_output_folder_never_runs(tmp_path):
    """The toy checkpoint (whatever name the run gives it beside ``<output_dir>``) and the pickle name of earlier
    versions (``<output_dir>.checkpoint.pt``) each hold the payload: neither runs, the log names the file it
    skipped, and the run trains from the start to a complete pipeline folder."""
    from nbhelpers.toy.train import train_toy_model

    out = tmp_path / "run"

    def killer(message: str) -> None:
        if message.startswith("VAE step 2/"):
            raise _Killed(message)

    with pytest.raises(_Killed):
        train_toy_model(_toy_config(out), log=killer)
    [checkpoint] = [path for path in tmp_path.iterdir() if path.name.startswith("run.checkpoint")]
    legacy = tmp_path / "run.checkpoint.pt"
    for planted in dict.fromkeys([checkpoint, legacy]):
        marker = tmp_path / f"code-ran-{planted.name}"
        plant(planted, marker)
        messages: list[str] = []
        folder = train_toy_model(_toy_config(out), log=messages.append)
        assert not marker.exists(), f"toy-train unpickled {planted.name} and ran the code planted in it"
        assert any(planted.name in m for m in messages), messages
        assert not any("resuming" in m for m in messages), messages
        assert (folder / "model_index.json").is_file()
        shutil.rmtree(folder)
