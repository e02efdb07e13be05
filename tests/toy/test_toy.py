"""The toy "shapes" data set, the picture reader that scores toy models, and the training script (a micro run)."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from nbhelpers.toy.evaluate import accuracy, attention_ratio, read_scene
from nbhelpers.toy.shapes import BACKGROUNDS, COLOURS, SHAPES, Scene, all_captions, area_share, make_scenes


def test_scenes_are_seeded_and_captioned():
    first, again, other = make_scenes(50, seed=3), make_scenes(50, seed=3), make_scenes(50, seed=4)
    assert first == again and first != other
    assert first[0].caption == f"a {first[0].colour} {first[0].shape} on a {first[0].background} background"
    assert len(all_captions()) == len(COLOURS) * len(SHAPES) * len(BACKGROUNDS) == 36
    with pytest.raises(ValueError, match="Unknown shape 'hexagon'"):
        Scene("hexagon", "red", "white")
    assert "star" not in {scene.shape for scene in make_scenes(500)}  # DreamBooth's new subject, never in the data


def test_mask_matches_the_geometry():
    for scene in make_scenes(40, seed=0):
        image, mask = scene.render()
        assert image.size == (64, 64) and mask.shape == (64, 64)
        assert abs(mask.mean() - area_share(scene)) < 0.04


@pytest.mark.parametrize("damage", ["none", "noise", "blur"])
def test_reader_reads_clean_noisy_and_blurred_pictures(damage):
    scenes = make_scenes(150, seed=1)
    rng = np.random.default_rng(0)
    pictures = []
    for scene in scenes:
        image = scene.render()[0]
        if damage == "blur":
            image = image.filter(ImageFilter.GaussianBlur(1.2))
        array = np.asarray(image, dtype=float)
        if damage == "noise":
            array = np.clip(array + rng.normal(0, 25, array.shape), 0, 255)
        pictures.append(array)
    scores = accuracy(pictures, scenes)
    assert scores["background"] == 1.0 and scores["colour"] == 1.0
    assert scores["shape"] >= 0.95, scores


def test_reader_says_none_for_an_empty_picture_and_scores_mismatches():
    blank = np.full((64, 64, 3), 128.0)
    assert read_scene(blank).shape == "none" and read_scene(blank).background == "gray"
    red_circle = Scene("circle", "red", "white")
    assert read_scene(red_circle.render()[0]).matches(Scene("square", "red", "black")) == {
        "colour": True,
        "shape": False,
        "background": False,
    }
    assert accuracy([red_circle.render()[0]], [Scene("circle", "blue", "white")])["all"] == 0.0


def test_attention_ratio():
    mask = np.zeros((8, 8), bool)
    mask[:4, :4] = True  # a quarter of the picture
    assert attention_ratio(np.ones((8, 8)), mask) == pytest.approx(1.0)
    assert attention_ratio(mask.astype(float), mask) == pytest.approx(4.0)
    with pytest.raises(ValueError, match="same shape"):
        attention_ratio(np.ones((4, 4)), mask)


def test_micro_training_run_writes_a_pipeline_that_toy_mode_loads(tmp_path, monkeypatch):
    """Two optimiser steps per stage on 16 pictures: the script's whole path, not a trained model. Written to the
    default folder, it is what ``load_pipeline("deci-v1", stand_in="toy")`` finds."""
    from nbhelpers.generation import generate
    from nbhelpers.loading import ModelLoadError, load_pipeline
    from nbhelpers.toy.pipelines import trained_toy_dir
    from nbhelpers.toy.train import ToyTrainingConfig, train_toy_model

    monkeypatch.setenv("NBHELPERS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("nbhelpers.toy.pipelines.SHIPPED_TOY_DIR", tmp_path / "shipped")  # whatever ships
    settings = ToyTrainingConfig(
        model="deci", num_scenes=16, vae_steps=2, max_train_steps=2, decoder_steps=2, batch_size=4, evaluate=False
    )
    folder = train_toy_model(settings, log=lambda _: None)
    assert folder == trained_toy_dir("deci") == tmp_path / "cache" / "toy" / "shapes-deci"
    assert (folder / "flexible_unet" / "config.json").is_file() and not (folder / "unet").exists()
    training = json.loads((folder / "training.json").read_text())
    assert training["settings"]["max_train_steps"] == 2 and np.isfinite(training["final_loss"])

    pipe = load_pipeline("deci-v1", stand_in="toy", device="cpu", progress=False)
    info = pipe.nbhelpers_info
    assert info.stand_in == "toy" and info.source == str(folder) and info.label == "deci-v1 (toy model (shapes))"
    assert type(pipe.unet).__name__ == "FlexibleUNet2DConditionModel"
    assert pipe.scheduler.config.prediction_type == "v_prediction" and pipe.scheduler.config.rescale_betas_zero_snr
    result = generate(pipe, "a red circle on a white background", num_inference_steps=2)
    assert result.images[0].size == (64, 64)
    assert result.labels() == ["seed 0: a red circle on a white background (toy model (shapes))"]

    # SD v1.5's stand-in was not trained here: the error says how to get it.
    with pytest.raises(ModelLoadError, match="nbhelpers toy-train --model sd"):
        load_pipeline("sd-v1-5", stand_in="toy", device="cpu")
    with pytest.raises(ValueError, match="stand_in='toys' is not a stand-in: use one of toy, tiny"):
        load_pipeline("deci-v1", stand_in="toys")
    with pytest.raises(ValueError, match="learning_rate must be a positive finite number"):
        ToyTrainingConfig(learning_rate=float("inf")).validate()


def test_toy_train_refuses_bad_settings_before_any_work(tmp_path, capsys):
    """A negative seed or an output folder that cannot be written: one line naming the flag, exit status 2, before
    the data set is drawn (not at the first checkpoint, minutes into training)."""
    from nbhelpers.cli import main

    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_text("keep me")
    logged: list[str] = []
    for flags, message in (
        (["--seed", "-1"], "seed must be 0 or more"),
        (
            ["--output_dir", str(not_a_folder / "run")],
            "Cannot write to output folder .*a-file.*Choose another folder with --output_dir",
        ),
    ):
        assert main(["toy-train", "--model", "sd", "--num_scenes", "8", *flags]) == 2
        out, err = capsys.readouterr()
        logged.append(out)
        assert re.search(message, err) and "Traceback" not in err, err
    assert not any("Data:" in line for line in logged)  # stopped before drawing pictures
    assert not_a_folder.read_text() == "keep me"


class _Killed(Exception):
    """Stands in for a run killed mid-way (Ctrl-C, a preempted VM)."""


@pytest.mark.slow
@pytest.mark.parametrize("killed_at", ["VAE step 2/3", "UNet step 3/3"])
def test_a_killed_toy_run_resumes_to_the_same_weights(tmp_path, killed_at):
    from safetensors.torch import load_file

    from nbhelpers.toy.train import ToyTrainingConfig, train_toy_model

    def settings(name: str) -> ToyTrainingConfig:
        return ToyTrainingConfig(
            model="sd",
            output_dir=str(tmp_path / name),
            num_scenes=16,
            vae_steps=3,
            max_train_steps=3,
            decoder_steps=2,
            batch_size=4,
            checkpointing_steps=1,
            save_precision="fp32",
            evaluate=False,
        )

    whole = train_toy_model(settings("whole"), log=lambda _: None)

    def killer(message: str) -> None:
        if message.startswith(killed_at):
            raise _Killed(message)

    with pytest.raises(_Killed):
        train_toy_model(settings("resumed"), log=killer)
    checkpoint = tmp_path / "resumed.checkpoint.safetensors"
    assert checkpoint.is_file() and not (tmp_path / "resumed").exists()
    messages: list[str] = []
    resumed = train_toy_model(settings("resumed"), log=messages.append)
    assert any("resuming at step" in m for m in messages), messages
    assert not checkpoint.exists()  # deleted once the pipeline folder is complete
    for component in ("unet", "vae"):
        expected = load_file(whole / component / "diffusion_pytorch_model.safetensors")
        got = load_file(resumed / component / "diffusion_pytorch_model.safetensors")
        assert all(torch.equal(expected[k], got[k]) for k in expected), component


def test_a_checkpoint_of_other_settings_is_refused_and_a_damaged_one_skipped(tmp_path):
    """Other settings: the run stops and says what to do (the work is kept: the setting may have changed by
    mistake). A damaged or foreign checkpoint: one line says it is ignored, and the run trains from the start."""
    from nbhelpers.toy.train import ToyTrainingConfig, ToyTrainingConfigError, train_toy_model

    def killer(message: str) -> None:
        if message.startswith("VAE step 2/"):
            raise _Killed(message)

    first = ToyTrainingConfig(
        output_dir=str(tmp_path / "run"),
        num_scenes=16,
        vae_steps=3,
        max_train_steps=2,
        decoder_steps=0,
        batch_size=4,
        checkpointing_steps=1,
        evaluate=False,
    )
    with pytest.raises(_Killed):
        train_toy_model(first, log=killer)
    checkpoint = tmp_path / "run.checkpoint.safetensors"
    changed = ToyTrainingConfig(**{**first.__dict__, "learning_rate": 5e-4})
    with pytest.raises(ToyTrainingConfigError, match=r"other settings \(learning_rate\).*delete the checkpoint"):
        train_toy_model(changed, log=lambda _: None)
    assert checkpoint.is_file()
    for damage, reason in ((b"not a checkpoint", "not a safetensors file"), (checkpoint.read_bytes()[:-9], "")):
        checkpoint.write_bytes(damage)
        messages: list[str] = []
        folder = train_toy_model(first, log=messages.append)
        ignored = [m for m in messages if m.startswith(f"Ignoring {checkpoint}")]
        assert len(ignored) == 1 and reason in ignored[0] and "training from the start" in ignored[0], messages
        assert not any("resuming" in m for m in messages) and (folder / "model_index.json").is_file()
        shutil.rmtree(folder)


def test_min_snr_weight_caps_the_loss_of_nearly_clean_steps():
    from nbhelpers.toy.train import min_snr_weight

    snr = torch.tensor([0.5, 5.0, 50.0])
    assert torch.allclose(min_snr_weight(snr, 5.0, epsilon=True), torch.tensor([1.0, 1.0, 0.1]))
    assert torch.allclose(min_snr_weight(snr, 5.0, epsilon=False), torch.tensor([0.5 / 1.5, 5 / 6, 5 / 51]))


def test_continuing_a_trained_toy_model_keeps_its_vae_and_its_record(tmp_path):
    from safetensors.torch import load_file

    from nbhelpers.toy.train import ToyTrainingConfig, train_toy_model

    small = {"num_scenes": 16, "batch_size": 4, "save_precision": "fp32", "evaluate": False}
    first = train_toy_model(
        ToyTrainingConfig(
            model="sd", output_dir=str(tmp_path / "first"), vae_steps=2, max_train_steps=2, decoder_steps=1, **small
        ),
        log=lambda _: None,
    )
    messages: list[str] = []
    more = ToyTrainingConfig(
        model="sd",
        output_dir=str(tmp_path / "more"),
        continue_from=str(first),
        vae_steps=2,
        max_train_steps=3,
        decoder_steps=0,
        snr_gamma=5.0,
        **small,
    )
    second = train_toy_model(more, log=messages.append)
    assert any("VAE: kept from" in m for m in messages), messages

    def weights(folder, component):
        return load_file(folder / component / "diffusion_pytorch_model.safetensors")

    vae_before, vae_after = weights(first, "vae"), weights(second, "vae")
    assert all(torch.equal(vae_before[k], vae_after[k]) for k in vae_before)
    unet_before, unet_after = weights(first, "unet"), weights(second, "unet")
    assert any(not torch.equal(unet_before[k], unet_after[k]) for k in unet_before)
    record = json.loads((second / "training.json").read_text())
    earlier = json.loads((first / "training.json").read_text())
    assert record["continued_from"]["settings"] == earlier["settings"] and record["continued_from"]["folder"] == "first"
    assert len(record["losses"]["unet"]) == 3 and record["losses"]["vae"] == []
    assert record["minutes"] >= earlier["minutes"] and record["settings"]["snr_gamma"] == 5.0
    for config_file in second.glob("*/config.json"):  # no path of the training machine in what ships
        assert "_name_or_path" not in json.loads(config_file.read_text()), config_file
    assert json.loads((second / "vae" / "config.json").read_text())["scaling_factor"] == pytest.approx(
        json.loads((first / "vae" / "config.json").read_text())["scaling_factor"]
    )

    with pytest.raises(ValueError, match="lacks flexible_unet: .*toy-train --model deci"):
        train_toy_model(ToyTrainingConfig(**{**more.__dict__, "model": "deci"}), log=lambda _: None)
    (tmp_path / "hub-like").mkdir()
    (tmp_path / "hub-like" / "model_index.json").write_text("{}")
    with pytest.raises(ValueError, match="lacks training.json, vae, text_encoder, unet: .*nbhelpers toy-train"):
        train_toy_model(ToyTrainingConfig(**{**more.__dict__, "continue_from": str(tmp_path / "hub-like")}))
    (second / "training.json").write_text("{torn")
    with pytest.raises(ValueError, match="cannot be read"):
        train_toy_model(ToyTrainingConfig(**{**more.__dict__, "continue_from": str(second)}))
    with pytest.raises(ValueError, match="continue_from must be a trained toy pipeline folder"):
        ToyTrainingConfig(continue_from=str(tmp_path)).validate()
    with pytest.raises(ValueError, match="snr_gamma must be 0"):
        ToyTrainingConfig(snr_gamma=-1).validate()


def test_star_likeness_tells_a_star_from_the_known_shapes():
    from nbhelpers.toy.evaluate import shape_likeness

    for extent in (0.2, 0.3):
        scores = {
            shape: shape_likeness(
                Scene(shape=shape, colour="red", background="white", centre=(0.4, 0.55), extent=extent).render()[0]
            )
            for shape in ("star", *SHAPES)
        }
        assert scores["star"] > 0.9, scores
        assert max(scores[shape] for shape in SHAPES) < 0.6, scores
    assert shape_likeness(Image.new("RGB", (64, 64), "white")) == 0.0  # no shape drawn
