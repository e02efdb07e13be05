"""DreamBooth on the tiny SD pipeline: learning, LoRA output, resume, prior preservation, full fine-tune, bad input."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from nbhelpers.dreambooth.checkpoints import latest_checkpoint
from nbhelpers.dreambooth.config import DreamBoothConfig, DreamBoothConfigError
from nbhelpers.dreambooth.data import DreamBoothDataError, load_images, make_synthetic_subject, preprocess
from nbhelpers.dreambooth.trainer import DreamBoothTrainer, check_launch, train_dreambooth
from nbhelpers.loading import load_pipeline


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    return make_synthetic_subject(tmp_path_factory.mktemp("subject"), count=4, size=96)


def _config(subject, out, **overrides):
    settings = {"stand_in": "tiny", "resolution": 64, "max_train_steps": 4, "checkpointing_steps": 2, "seed": 0}
    return DreamBoothConfig(str(subject), str(out), **(settings | overrides))


@pytest.mark.parametrize("use_lora", [True, False])
def test_loss_falls_when_overfitting_a_fixed_batch(subject, tmp_path, use_lora):
    trainer = DreamBoothTrainer(_config(subject, tmp_path, use_lora=use_lora, learning_rate=1e-2 if use_lora else 1e-4))
    batch = next(iter(trainer.dataloader))
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(batch["pixels"].shape[0], 4, 8, 8, generator=generator)
    timesteps = torch.full((batch["pixels"].shape[0],), 500)

    def loss():
        torch.manual_seed(0)  # the same latent sample from the VAE every time: a truly fixed batch
        return trainer.compute_loss(batch, noise, timesteps)

    first = float(loss().detach())
    for _ in range(25):
        trainer.optimizer_step(loss())
    last = float(loss().detach())
    assert last < 0.7 * first, (first, last)


def test_saved_lora_loads_into_a_fresh_pipeline_and_changes_its_output(subject, tmp_path):
    result = train_dreambooth(_config(subject, tmp_path, learning_rate=5e-3), progress=False)
    assert result.weights_dir.name == "lora" and (result.weights_dir / "pytorch_lora_weights.safetensors").exists()
    pipe = load_pipeline("sd-v1-4", stand_in="tiny", device="cpu", progress=False)
    settings = {"num_inference_steps": 2, "output_type": "np"}
    before = pipe("a photo of sks dog", generator=torch.Generator().manual_seed(0), **settings).images
    pipe.load_lora_weights(result.weights_dir)
    after = pipe("a photo of sks dog", generator=torch.Generator().manual_seed(0), **settings).images
    assert np.abs(after - before).max() > 1e-3
    log = pd.read_csv(tmp_path / "train_log.csv")
    assert list(log["step"]) == [1, 2, 3, 4] and log["loss"].notna().all()


@pytest.mark.slow
def test_a_run_killed_after_a_checkpoint_resumes_to_the_same_total(subject, tmp_path):
    out = tmp_path / "run"
    code = textwrap.dedent(f"""
        from nbhelpers.dreambooth.trainer import train_dreambooth
        from nbhelpers.dreambooth.config import DreamBoothConfig
        train_dreambooth(DreamBoothConfig({str(subject)!r}, {str(out)!r}, stand_in="tiny", resolution=64,
                                          max_train_steps=400, checkpointing_steps=2), progress=False)
    """)
    process = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "NBHELPERS_STAND_IN": "tiny"})
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None and latest_checkpoint(out) is None:
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.wait()
    checkpoint = latest_checkpoint(out)
    assert checkpoint is not None, "the first run should have written a checkpoint before it was killed"
    resumed = train_dreambooth(_config(subject, out, max_train_steps=checkpoint[0] + 3), progress=False)
    assert resumed.resumed_from == checkpoint[0] and resumed.global_step == checkpoint[0] + 3
    steps = list(pd.read_csv(out / "train_log.csv")["step"])
    assert steps == list(range(1, checkpoint[0] + 4))  # every step logged exactly once
    assert not list((out / "checkpoints").glob(".*"))  # no half-written checkpoint left behind


@pytest.mark.slow
def test_prior_preservation_generates_and_reuses_class_images(subject, tmp_path):
    config = _config(
        subject,
        tmp_path / "a",
        with_prior_preservation=True,
        num_class_images=3,
        max_train_steps=2,
        class_data_dir=str(tmp_path / "class"),
    )
    trainer = DreamBoothTrainer(config)
    assert len(list((tmp_path / "class").glob("*.png"))) == 3
    batch = next(iter(trainer.dataloader))
    assert batch["pixels"].shape[0] == 2 * batch["num_instance"]  # instance + class examples
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "class").glob("*.png")}
    result = train_dreambooth(
        _config(
            subject,
            tmp_path / "b",
            with_prior_preservation=True,
            num_class_images=3,
            max_train_steps=2,
            class_data_dir=str(tmp_path / "class"),
        ),
        progress=False,
    )
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "class").glob("*.png")} == stamps  # reused
    assert result.global_step == 2


def test_full_fine_tune_saves_a_loadable_pipeline(subject, tmp_path):
    result = train_dreambooth(
        _config(
            subject,
            tmp_path,
            use_lora=False,
            max_train_steps=2,
            validation_prompts=["a photo of sks dog in a bucket"],
            validation_steps=2,
            validation_inference_steps=2,
        ),
        progress=False,
    )
    assert result.weights_dir.name == "pipeline" and len(result.validation_images) == 1
    pipe = load_pipeline(result.weights_dir, device="cpu", progress=False)
    base = load_pipeline("sd-v1-4", stand_in="tiny", device="cpu", progress=False)
    changed = [not torch.equal(a, b) for a, b in zip(pipe.unet.parameters(), base.unet.parameters(), strict=True)]
    assert any(changed)


def test_bad_input_is_named(tmp_path, subject):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DreamBoothDataError, match="No images in"):
        load_images(tmp_path / "empty", min_side=32)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "photo.jpg").write_bytes(b"not an image")
    with pytest.raises(DreamBoothDataError, match="Cannot read .*photo.jpg"):
        load_images(tmp_path / "broken", min_side=32)
    (tmp_path / "small").mkdir()
    Image.new("RGB", (20, 40)).save(tmp_path / "small" / "tiny.webp")
    with pytest.raises(DreamBoothDataError, match="20x40; its short side must be at least 32"):
        load_images(tmp_path / "small", min_side=32)
    with pytest.raises(DreamBoothDataError, match="does not exist"):
        load_images(tmp_path / "missing", min_side=32)
    with pytest.raises(DreamBoothConfigError, match="does not contain the identifier 'sks'"):
        _config(subject, tmp_path, instance_prompt="a photo of my dog").validate()
    with pytest.raises(DreamBoothConfigError, match=r"lora_target_modules \['to_qq'\] name no module"):
        DreamBoothTrainer(_config(subject, tmp_path, lora_target_modules=("to_q", "to_qq")))
    for bad in (
        {"resolution": 100},
        {"max_train_steps": 0},
        {"learning_rate": -1.0},
        {"mixed_precision": "fp8"},
        {"lora_rank": 0},
    ):
        with pytest.raises(DreamBoothConfigError):
            _config(subject, tmp_path, **bad).validate()


def test_preprocessing_orientation_crop_and_range(tmp_path):
    image = Image.new("RGB", (60, 30), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    image.save(tmp_path / "rotated.jpg", exif=exif)
    [upright] = load_images(tmp_path, min_side=16)
    assert upright.size == (30, 60)
    pixels = preprocess(upright, 16)
    assert pixels.shape == (3, 16, 16) and pixels.min() >= -1 and pixels.max() <= 1


def test_mixed_precision_keeps_frozen_weights_half_and_trained_ones_fp32(subject, tmp_path):
    trainer = DreamBoothTrainer(_config(subject, tmp_path, mixed_precision="bf16", max_train_steps=2))
    trained = trainer.trainable_parameters()
    assert trained and all(p.dtype == torch.float32 for p in trained)
    assert trainer.vae.dtype == torch.bfloat16 and trainer.text_encoder.dtype == torch.bfloat16
    frozen_unet = [p for p in trainer.unet.parameters() if not p.requires_grad]
    assert frozen_unet and all(p.dtype == torch.bfloat16 for p in frozen_unet)
    result = trainer.train(progress=False)
    assert result.global_step == 2 and all(np.isfinite(loss) for _, loss in result.losses)


@pytest.mark.slow
def test_step_benchmark_runs_and_saves_its_figures(tmp_path):
    out = tmp_path / "dreambooth_step.json"
    subprocess.run(
        [
            sys.executable,
            "benchmarks/dreambooth_step.py",
            "--tiny",
            "--modes",
            "lora",
            "--repeats",
            "1",
            "--out",
            str(out),
        ],
        check=True,
        capture_output=True,
        env={**os.environ, "NBHELPERS_STAND_IN": "tiny"},
    )
    report = json.loads(out.read_text())
    [lora] = report["results"]
    assert lora["mode"] == "lora" and lora["step_median_s"] > 0 and lora["batch"] == "1 instance + 1 class"
    assert lora["weights"] == "tiny, random" and report["environment"]


@pytest.mark.slow
def test_full_size_step_benchmark_refuses_without_cuda(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is here; the refusal only applies without one")
    run = subprocess.run(
        [sys.executable, "benchmarks/dreambooth_step.py", "--device", "cpu"], capture_output=True, text=True
    )
    assert run.returncode != 0 and "need a CUDA GPU" in run.stderr


def test_a_multi_process_launch_accelerate_did_not_join_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(DreamBoothConfigError, match="ACCELERATE_USE_CPU=1"):
        check_launch(num_processes=1)
    check_launch(num_processes=2)  # joined: fine
    monkeypatch.delenv("WORLD_SIZE")
    check_launch(num_processes=1)  # a plain single-process run


def test_steps_by_hand_then_undone_leave_the_run_as_it_was(subject, tmp_path):
    """The notebook's loop by hand: compute_loss and optimizer_step change the weights; load_state_dict puts back
    what state_dict took (weights, optimizer, schedule, random generators), so train() then gives the losses of a
    run nobody touched."""
    from nbhelpers.training.state import UnreadableState

    untouched = train_dreambooth(
        _config(subject, tmp_path / "a", max_train_steps=3, learning_rate=1e-3), progress=False
    )
    trainer = DreamBoothTrainer(_config(subject, tmp_path / "b", max_train_steps=3, learning_rate=1e-3))
    start = trainer.state_dict()
    before = {name: p.detach().clone() for name, p in trainer.named_trainable_parameters().items()}
    trainer.unet.train()
    for micro_step, batch in zip(range(2), trainer.dataloader, strict=False):
        trainer.optimizer_step(trainer.compute_loss(batch, generator=trainer.step_generator(micro_step)))
    after = trainer.named_trainable_parameters()
    assert any(not torch.equal(before[name], after[name]) for name in before)
    assert trainer.lr_scheduler.state_dict()["last_epoch"] == 2
    with pytest.raises(UnreadableState, match="trained parameters holds other tensors"):
        trainer.load_state_dict({**start, "trained_parameters": {}})
    trainer.load_state_dict(start)
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert trainer.train(progress=False).losses == untouched.losses


def test_uploaded_photos_are_saved_by_their_names_only(tmp_path, subject):
    """What Colab's files.upload() returns: names may carry folders (kept out) and non-photos (left out)."""
    from nbhelpers.dreambooth.data import save_uploaded_photos

    photo = next(subject.iterdir()).read_bytes()
    folder = save_uploaded_photos({"../../dog.png": photo, "notes.txt": b"x", "b.PNG": photo}, tmp_path / "mine")
    assert sorted(p.name for p in folder.iterdir()) == ["b.PNG", "dog.png"]
    assert len(load_images(folder, min_side=32)) == 2 and not (tmp_path / "dog.png").exists()
    with pytest.raises(DreamBoothDataError, match=r"None of the uploaded files \['notes.txt'\] is a photo"):
        save_uploaded_photos({"notes.txt": b"x"}, tmp_path / "other")
