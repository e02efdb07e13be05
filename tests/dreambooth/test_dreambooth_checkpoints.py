"""DreamBooth checkpoints on the tiny model: small, never fatal, exact resume, divergence, bad settings, the CLI."""

import json
import logging

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from nbhelpers.cli import build_parser, main
from nbhelpers.dreambooth import CheckpointError, DreamBoothConfig, DreamBoothConfigError, TrainingDiverged
from nbhelpers.dreambooth.checkpoints import latest_checkpoint, list_checkpoints
from nbhelpers.dreambooth.data import make_synthetic_subject
from nbhelpers.dreambooth.trainer import DreamBoothTrainer, train_dreambooth


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    return make_synthetic_subject(tmp_path_factory.mktemp("subject"), count=4, size=96)


def _config(subject, out, **overrides):
    settings = {
        "stand_in": "tiny",
        "resolution": 64,
        "max_train_steps": 4,
        "checkpointing_steps": 2,
        "seed": 0,
        "checkpoints_total_limit": None,
    }
    return DreamBoothConfig(str(subject), str(out), **(settings | overrides))


def _trained(result_dir):
    return load_file(result_dir / "lora" / "pytorch_lora_weights.safetensors")


def test_checkpoint_holds_only_trained_state_and_is_a_few_times_the_lora(subject, tmp_path):
    result = train_dreambooth(_config(subject, tmp_path, max_train_steps=2), progress=False)
    _, folder = latest_checkpoint(tmp_path)
    checkpoint_bytes = sum(f.stat().st_size for f in folder.iterdir())
    lora_bytes = (result.weights_dir / "pytorch_lora_weights.safetensors").stat().st_size
    print(f"checkpoint {checkpoint_bytes} bytes, LoRA {lora_bytes} bytes, ratio {checkpoint_bytes / lora_bytes:.2f}")
    assert checkpoint_bytes <= 4 * lora_bytes, sorted((f.name, f.stat().st_size) for f in folder.iterdir())
    saved = load_file(folder / "trained_parameters.safetensors")
    assert saved and all("lora_" in name for name in saved)  # no frozen UNet weight
    assert not list(folder.glob("model*.safetensors"))


def test_resumed_run_continues_exactly_as_the_uninterrupted_one(subject, tmp_path):
    # random crops and flips, 2 images per batch, 2 batches per epoch: the resume lands mid-epoch
    settings = {"center_crop": False, "random_flip": True, "train_batch_size": 2, "learning_rate": 1e-3}
    whole = train_dreambooth(_config(subject, tmp_path / "whole", max_train_steps=5, **settings), progress=False)
    first = train_dreambooth(_config(subject, tmp_path / "split", max_train_steps=3, **settings), progress=False)
    assert first.global_step == 3
    second = train_dreambooth(_config(subject, tmp_path / "split", max_train_steps=5, **settings), progress=False)
    assert second.resumed_from == 3
    assert second.losses == whole.losses  # same data, same noise, step by step
    a, b = _trained(tmp_path / "whole"), _trained(tmp_path / "split")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6)


def test_unreadable_latest_checkpoint_is_reported_and_the_previous_one_used(subject, tmp_path, caplog):
    train_dreambooth(_config(subject, tmp_path), progress=False)  # checkpoints 2 and 4
    step, newest = latest_checkpoint(tmp_path)
    assert step == 4
    for file in newest.glob("*.safetensors"):
        with open(file, "r+b") as handle:
            handle.truncate(100)
    with caplog.at_level(logging.WARNING):
        result = train_dreambooth(_config(subject, tmp_path, max_train_steps=6), progress=False)
    assert result.resumed_from == 2 and result.global_step == 6
    assert "checkpoint-4 cannot be read" in caplog.text
    assert list(pd.read_csv(tmp_path / "train_log.csv")["step"]) == [1, 2, 3, 4, 5, 6]


def test_checkpoints_in_the_pickled_format_of_earlier_versions_are_skipped(subject, tmp_path, caplog):
    """Earlier versions wrote accelerate's pickles: such a checkpoint is named and skipped, never loaded; a run
    whose only checkpoints are such starts fresh instead of stopping."""
    train_dreambooth(_config(subject, tmp_path), progress=False)  # checkpoints 2 and 4

    def make_old(folder):
        state = json.loads((folder / "run_state.json").read_text())
        (folder / "run_state.json").write_text(json.dumps(state | {"format": 1}))

    make_old(latest_checkpoint(tmp_path)[1])
    with caplog.at_level(logging.WARNING):
        result = train_dreambooth(_config(subject, tmp_path, max_train_steps=5), progress=False)
    assert result.resumed_from == 2 and "earlier nbhelpers in accelerate's format" in caplog.text
    old = list_checkpoints(tmp_path)
    for _, folder in old:
        make_old(folder)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        fresh = train_dreambooth(_config(subject, tmp_path, max_train_steps=2), progress=False)
    assert fresh.resumed_from == 0 and caplog.text.count("earlier nbhelpers") == len(old) == 3  # 2, 4 and 5


def test_no_readable_checkpoint_says_how_to_start_fresh(subject, tmp_path):
    train_dreambooth(_config(subject, tmp_path, max_train_steps=2), progress=False)
    _, only = latest_checkpoint(tmp_path)
    (only / "run_state.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="No readable checkpoint.*resume=False"):
        train_dreambooth(_config(subject, tmp_path), progress=False)
    fresh = train_dreambooth(_config(subject, tmp_path, resume=False), progress=False)
    assert fresh.resumed_from == 0 and fresh.global_step == 4


def test_foreign_folders_are_ignored_and_kept(subject, tmp_path):
    checkpoints = tmp_path / "checkpoints"
    (checkpoints / "checkpoint-old").mkdir(parents=True)
    (checkpoints / "checkpoint-old" / "notes.txt").write_text("mine")
    (checkpoints / "checkpoint-1").mkdir()  # another tool's numbered checkpoint, without our run state
    (checkpoints / "checkpoint-1" / "model.safetensors").write_bytes(b"x")
    result = train_dreambooth(_config(subject, tmp_path, checkpoints_total_limit=1), progress=False)
    assert result.resumed_from == 0 and result.global_step == 4
    assert (checkpoints / "checkpoint-old" / "notes.txt").read_text() == "mine"
    assert (checkpoints / "checkpoint-1" / "model.safetensors").exists()
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-1", "checkpoint-4", "checkpoint-old"]


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"lora_rank": 8}, "lora_rank is 8 now but 4"),
        ({"use_lora": False}, "use_lora is False now but True"),
        ({"lora_target_modules": ["to_q"]}, "lora_target_modules"),
    ],
)
def test_a_resume_with_conflicting_settings_names_the_conflict(subject, tmp_path, change, named):
    train_dreambooth(_config(subject, tmp_path, max_train_steps=2), progress=False)
    with pytest.raises(CheckpointError, match=named):
        train_dreambooth(_config(subject, tmp_path, **change), progress=False)


def test_a_loss_that_turns_nan_stops_the_run_and_keeps_the_last_good_checkpoint(subject, tmp_path, monkeypatch):
    trainer = DreamBoothTrainer(_config(subject, tmp_path, max_train_steps=6))
    original, calls = trainer.compute_loss, []

    def loss_turning_nan_at_step_3(*args, **kwargs):
        calls.append(1)
        loss = original(*args, **kwargs)
        return loss * float("nan") if len(calls) == 3 else loss

    monkeypatch.setattr(trainer, "compute_loss", loss_turning_nan_at_step_3)
    with pytest.raises(TrainingDiverged, match=r"loss became non-finite .* at step 3.*checkpoint-2"):
        trainer.train(progress=False)
    step, kept = latest_checkpoint(tmp_path)
    assert step == 2 and all(
        torch.isfinite(t).all() for t in load_file(kept / "trained_parameters.safetensors").values()
    )
    assert not (tmp_path / "lora").exists()  # no NaN LoRA written
    assert list(pd.read_csv(tmp_path / "train_log.csv")["step"]) == [1, 2]


@pytest.mark.parametrize(
    "bad", [{"learning_rate": float("inf")}, {"learning_rate": float("nan")}, {"prior_loss_weight": float("inf")}]
)
def test_non_finite_numbers_are_refused_before_training(subject, tmp_path, bad):
    with pytest.raises(DreamBoothConfigError, match="must be a finite number"):
        DreamBoothTrainer(_config(subject, tmp_path, **bad))
    assert not (tmp_path / "checkpoints").exists()


def test_output_dir_that_is_a_file_is_refused(subject, tmp_path):
    existing = tmp_path / "out.txt"
    existing.write_text("keep me")
    with pytest.raises(DreamBoothConfigError, match="output_dir .*out.txt is a file"):
        DreamBoothTrainer(_config(subject, existing))
    assert existing.read_text() == "keep me"


def test_cli_flags_are_the_config_fields_and_errors_are_one_line(subject, tmp_path, capsys):
    args = build_parser().parse_args(
        [
            "dreambooth",
            "--instance_data_dir",
            str(subject),
            "--output-dir",
            str(tmp_path),
            "--tiny",
            "--lora_rank",
            "8",
            "--no_resume",
            "--validation_prompts",
            "a",
            "b c",
            "--gradient_checkpointing",
        ]
    )
    assert (args.instance_data_dir, args.output_dir, args.stand_in, args.lora_rank, args.resume) == (
        str(subject),
        str(tmp_path),
        "tiny",
        8,
        False,
    )
    assert args.validation_prompts == ["a", "b c"] and args.gradient_checkpointing is True
    assert args.use_8bit_adam is None and args.memory == "auto"  # the dataclass's defaults
    with pytest.raises(SystemExit):
        build_parser().parse_args(["dreambooth", "--help"])
    assert "Folder with 3-10 photos of the subject" in capsys.readouterr().out  # the field's metadata
    existing = tmp_path / "file"
    existing.write_text("")
    for flags, message in (
        (["--output_dir", str(existing)], "is a file"),
        (["--output_dir", str(existing / "run")], "Cannot write to output folder"),
        (["--output_dir", str(tmp_path / "o"), "--learning_rate", "inf"], "finite number"),
    ):
        assert main(["dreambooth", "--instance_data_dir", str(subject), "--tiny", *flags]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
