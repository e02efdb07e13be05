"""Parameter and FLOP counts of the real architectures, the fast path on CPU, and the bench command."""

import json

import numpy as np
import pytest
import torch

from nbhelpers.cli import main
from nbhelpers.errors import ConfigurationError
from nbhelpers.loading import load_pipeline
from nbhelpers.models.random_weights import build_random_pipeline
from nbhelpers.perf.benchmark import BenchSettings, run_benchmark
from nbhelpers.perf.flops import component_parameters, count_parameters, full_size_parameters, model_step_flops
from nbhelpers.perf.optimize import optimize_pipeline


@pytest.mark.parametrize(
    "name, unet_params", [("sd-v1-5", 859_520_964), ("deci-v1", 814_746_884), ("small-sd-v0", 579_384_964)]
)
def test_full_size_architectures_have_the_published_parameter_counts(name, unet_params):
    assert full_size_parameters(name) == unet_params
    pipe = build_random_pipeline(name, device="meta")
    parameters = component_parameters(pipe)
    assert parameters == {"unet": unet_params, "text_encoder": 123_060_480, "vae": 83_653_863}
    assert pipe.nbhelpers_random_weights is True


@pytest.mark.parametrize("name, gflop", [("sd-v1-5", 1606.5), ("deci-v1", 1228.6), ("small-sd-v0", 1046.0)])
def test_flops_per_guided_step_match_the_reference(name, gflop):
    assert model_step_flops(name) / 1e9 == pytest.approx(gflop, rel=0.001)
    assert model_step_flops(name, batch_size=2) == 2 * model_step_flops(name)


@pytest.mark.parametrize("name", ["sd-v1-5", "deci-v1"])
def test_cpu_fast_path_modes_keep_the_output(name):
    pipe = load_pipeline(name, stand_in="tiny", device="cpu", progress=False)
    kwargs = {"num_inference_steps": 3, "output_type": "np"}
    reference = pipe("an owl", generator=torch.Generator().manual_seed(0), **kwargs).images
    optimize_pipeline(pipe, "fused")
    assert {type(p).__name__ for p in pipe.unet.attn_processors.values()} == {"FusedAttnProcessor2_0"}
    fast = pipe("an owl", generator=torch.Generator().manual_seed(0), **kwargs).images
    np.testing.assert_allclose(fast, reference, atol=1e-3)
    with pytest.raises(ValueError, match="already optimised"):
        optimize_pipeline(pipe, "channels_last")
    with pytest.raises(ValueError, match="Unknown optimize mode"):
        optimize_pipeline(pipe, "turbo")


def test_benchmark_refuses_to_measure_without_warmup():
    with pytest.raises(ValueError, match="never taken without a warm-up"):
        run_benchmark(BenchSettings(models=["deci-v1"], stand_in="tiny", warmup=0), log=lambda _: None)
    with pytest.raises(ValueError, match="Unknown model"):
        BenchSettings(models=["sd-v9"]).validate()
    with pytest.raises(ValueError, match=r"steps must be between 2 and 1000 \(a whole number\); got 1"):
        BenchSettings(steps=1).validate()


def test_bench_command_on_tiny_models_writes_a_report(tmp_path, capsys):
    out = tmp_path / "bench.json"
    status = main(
        [
            "bench",
            "--tiny",
            "--device",
            "cpu",
            "--models",
            "deci-v1",
            "sd-v1-5",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--repeats",
            "2",
            "--optimize",
            "none",
            "fused",
            "--out",
            str(out),
        ]
    )
    assert status == 0
    report = json.loads(out.read_text())
    assert "stand-in models (tiny, random weights)" in report["weights"] and report["device"] == "cpu"
    assert report["environment"]["packages"]["diffusers"]
    rows = report["results"]
    assert [(r["model"], r["optimize"]) for r in rows] == [
        ("deci-v1", "none"),
        ("deci-v1", "fused"),
        ("sd-v1-5", "none"),
        ("sd-v1-5", "fused"),
    ]
    for row in rows:
        assert row["seconds_per_image"] > 0 and row["unet_step_ms"] > 0 and row["gflop_per_guided_step"] > 0
        assert len(row["end_to_end_runs_seconds"]) == 2
        assert row["images_per_second"] == pytest.approx(1 / row["seconds_per_image"])
        assert row["max_abs_pixel_difference_vs_first_mode"] < 1e-3
        assert row["parameters"]["unet"] == count_parameters(load_pipeline(row["model"], stand_in="tiny").unet)
        stages = row["stages"]
        # PNDM (SD) runs one iteration more than the steps asked for, DDIM (DeciDiffusion) as many
        assert stages["loop_iterations"] == {"sd-v1-5": 3, "deci-v1": 2}[row["model"]]
        assert stages["loop_s"] > 0 and stages["after_loop_s"] > 0
        assert sum(stages["shares"].values()) == pytest.approx(1.0)
    assert "s/image" in capsys.readouterr().out


def test_fast_path_is_one_argument_away():
    pipe = load_pipeline("deci-v1", stand_in="tiny", device="cpu", optimize="fused", progress=False)
    assert pipe.nbhelpers_optimize == "fused"
    assert {type(p).__name__ for p in pipe.unet.attn_processors.values()} == {"FusedAttnProcessor2_0"}
    with pytest.raises(ValueError, match="Unknown optimize mode"):
        load_pipeline("deci-v1", stand_in="tiny", device="cpu", optimize="warp-speed")


def test_bench_flags_are_the_settings_fields_with_their_help(capsys):
    from dataclasses import fields

    from nbhelpers.arguments import settings_from_args
    from nbhelpers.cli import build_parser

    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    help_text = capsys.readouterr().out
    for settings_field in fields(BenchSettings):
        assert f"--{settings_field.name}" in help_text
        first_words = " ".join(settings_field.metadata["help"].split()[:3])
        assert first_words in " ".join(help_text.split()), settings_field.name
    args = build_parser().parse_args(["bench", "--batch-sizes", "1", "4", "--stand-in", "tiny", "--peak_tflops", "9"])
    settings = settings_from_args(BenchSettings, args)
    assert settings == BenchSettings(batch_sizes=[1, 4], stand_in="tiny", peak_tflops=9.0)
    assert settings_from_args(BenchSettings, build_parser().parse_args(["bench", "--toy"])).stand_in == "toy"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "--weights", "imaginary"])
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--height", "7"], "height must be a multiple of 64 between 64 and 2048 pixels"),  # deci-v1 is measured
        (["--height", "0"], "height must be a multiple of 64"),
        (["--models", "sd-v1-5", "--width", "12"], "width must be a multiple of 8 between 8 and 2048 pixels"),
        (["--device", "tpu"], "device 'tpu' is not supported: use cuda, cuda:N, mps or cpu (this machine has: "),
        (["--steps", "1"], "steps must be between 2 and 1000 (a whole number); got 1."),
        (["--batch_sizes", "0"], "each of batch_sizes must be between 1 and 64 (a whole number); got 0."),
        (["--repeats", "1000000"], "repeats must be between 1 and 1000 (a whole number)"),
        (["--warmup", "0"], "warmup must be at least 1: numbers are never taken without a warm-up."),
        (["--peak_tflops", "nan"], "peak_tflops must be between 0.001 and 1e+06"),
        (["--optimize", "turbo"], "Unknown optimize mode(s) ['turbo']"),
    ],
    ids=lambda value: value[-2] if isinstance(value, list) else "",
)
def test_bench_refuses_hostile_settings_in_one_line_before_measuring(tmp_path, capsys, flags, message):
    out = tmp_path / "bench.json"
    assert main(["bench", "--tiny", "--models", "deci-v1", "--out", str(out), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nbhelpers bench: error: ") and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_bench_out_must_name_a_file_not_an_existing_folder(tmp_path, capsys):
    assert main(["bench", "--tiny", "--models", "sd-v1-5", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"out is the folder {tmp_path}; give the report's file name, e.g. --out {tmp_path / 'bench.json'}" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"models": [None]}, r"each of models must be a string; got None \(NoneType\)"),
        ({"models": "deci-v1"}, "models must name at least one catalog model"),
        ({"models": []}, "models must name at least one catalog model"),
        ({"optimize": "fused"}, "Unknown optimize mode"),
        (
            {"batch_sizes": [True]},
            r"each of batch_sizes must be between 1 and 64 \(a whole number\); got True \(bool\)",
        ),
        ({"height": 512.5}, "height must be a multiple of 64"),
        ({"out": None}, "out must name the JSON report's file"),
        ({"out": ""}, "out must name the JSON report's file"),
    ],
)
def test_bench_settings_from_code_are_checked_like_flags(changes, message):
    with pytest.raises(ConfigurationError, match=message):
        BenchSettings(**{"models": ["deci-v1"], "stand_in": "tiny", **changes}).validate()
