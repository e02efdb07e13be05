import contextlib
import io
import os
import select
import signal
import stat
import subprocess
import sys
import time

import pytest
from PIL import Image

from nbhelpers.cli import main
from nbhelpers.images import read_image_metadata


def test_generate_tiny_writes_images_and_reports(tmp_path, capsys):
    status = main(
        [
            "generate",
            "A big owl with bright shinning eyes",
            "--model",
            "deci-v1",
            "--tiny",
            "--out",
            str(tmp_path / "out"),
            "--steps",
            "2",
            "--num-images",
            "2",
            "--seed",
            "5",
            "--quiet",
        ]
    )
    assert status == 0
    files = sorted((tmp_path / "out").glob("*.png"))
    assert len(files) == 2
    assert read_image_metadata(files[1])["seed"] == 6
    printed = capsys.readouterr().out
    assert str(files[0]) in printed and "Wrote 2 image(s)" in printed and " s " in printed


def test_unknown_model_is_a_clear_error(tmp_path, capsys):
    status = main(["generate", "x", "--model", "sd-v9", "--tiny", "--out", str(tmp_path)])
    assert status == 2
    err = capsys.readouterr().err
    assert "Unknown model 'sd-v9'" in err and "deci-v1" in err and "Traceback" not in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere; covered by the file-in-the-way case")
def test_unwritable_output_folder(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    assert main(["generate", "x", "--tiny", "--out", str(locked / "sub")]) == 2
    assert "Cannot write to output folder" in capsys.readouterr().err


def test_output_path_that_is_a_file(tmp_path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    assert main(["generate", "x", "--tiny", "--out", str(blocker / "images")]) == 2
    err = capsys.readouterr().err
    assert "Cannot write to output folder" in err and "--out" in err


def test_out_of_range_setting(tmp_path, capsys):
    assert main(["generate", "x", "--model", "sd-v1-5", "--tiny", "--out", str(tmp_path), "--height", "100"]) == 2
    assert "height must be a multiple of 8" in capsys.readouterr().err


@pytest.mark.slow
def test_console_script_env():
    result = subprocess.run(
        [sys.executable, "-m", "nbhelpers", "env", "--json"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert '"diffusers"' in result.stdout


def test_toy_without_a_trained_toy_model_says_how_to_train_one(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NBHELPERS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("nbhelpers.toy.pipelines.SHIPPED_TOY_DIR", tmp_path / "shipped")
    assert main(["generate", "x", "--model", "deci-v1", "--toy", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "nbhelpers toy-train --model deci" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "x", "--tiny", "--toy", "--out", str(tmp_path / "out")])
    assert (
        exit_info.value.code == 2 and "give one stand-in: --toy contradicts --stand-in tiny" in capsys.readouterr().err
    )


@pytest.mark.parametrize(
    ("command", "read"),
    [
        (["generate", "x"], lambda args: args.stand_in),
        (["env"], lambda args: args.stand_in),
        (["bench"], lambda args: args.stand_in),
        (["serve"], lambda args: args.stand_in),
        (["dreambooth", "--instance_data_dir", "d", "--output_dir", "o"], lambda args: args.stand_in),
    ],
    ids=lambda value: value[0] if isinstance(value, list) else "",
)
def test_every_command_that_loads_a_model_takes_the_stand_in_flags(command, read):
    from nbhelpers.cli import build_parser

    parser = build_parser()
    assert read(parser.parse_args(command)) is None
    assert read(parser.parse_args([*command, "--toy"])) == "toy"
    assert read(parser.parse_args([*command, "--tiny"])) == "tiny"
    assert read(parser.parse_args([*command, "--stand-in", "toy"])) == "toy"
    assert read(parser.parse_args([*command, "--stand_in", "none"])) == "none"


def test_a_command_whose_extra_is_missing_says_which_to_install(monkeypatch, capsys):
    import importlib.util

    from nbhelpers import cli

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "peft" else real(name, *a))
    assert main(["dreambooth", "--instance_data_dir", "x"]) == 2
    err = capsys.readouterr().err
    assert "needs the [training] extra (missing: peft)" in err and "pip install 'diffusion-nbhelpers[training]'" in err
    assert "(not installed) needs the [training] extra" in " ".join(cli.build_parser().format_help().split())


def test_any_other_import_error_fails_loudly(monkeypatch):
    from nbhelpers import cli

    monkeypatch.setitem(cli.COMMANDS, "broken", cli.Command("nbhelpers.cli.no_such_module", "Broken."))
    with pytest.raises(ModuleNotFoundError, match="no_such_module"):
        cli.build_parser()
    with pytest.raises(ModuleNotFoundError, match="no_such_module"):
        cli.main(["broken"])


def test_the_command_list_imports_no_command_and_no_torch():
    # `nbhelpers --help` took about 6 s when it imported every command (and with it torch and diffusers).
    code = (
        "import sys\n"
        "from nbhelpers.cli import COMMANDS, main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "loaded = [name for name in sys.modules if name == 'torch' or name.startswith('nbhelpers.cli.')]\n"
        "print('LOADED', loaded)\n"
    )
    wide = {**os.environ, "COLUMNS": "300"}  # argparse wraps help at the terminal's width
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=wide)
    assert "LOADED []" in result.stdout
    from nbhelpers.cli import COMMANDS

    listing = " ".join(result.stdout.split())
    for name, command in COMMANDS.items():
        assert f"{name} {' '.join(command.help.split())}" in listing


def test_no_command_help_imports_torch_or_diffusers():
    # `nbhelpers bench --help` (and dreambooth's, toy-train's) took about 5 s when the command module imported its
    # settings from the module that runs the command. One process for all: the first command that loads torch or
    # diffusers is the one named (serve's gateway, `python -m nbhelpers.endpoints.serving`, parses the same way).
    code = (
        "import contextlib, io, sys\n"
        "from nbhelpers.cli import COMMANDS, main\n"
        "from nbhelpers.endpoints import serving\n"
        "entry_points = {name: (main, [name, '--help']) for name in COMMANDS}\n"
        "entry_points['serve gateway'] = (serving.main, ['--help'])\n"
        "for name, (entry_point, argv) in entry_points.items():\n"
        "    out, err = io.StringIO(), io.StringIO()\n"
        "    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):\n"
        "        try:\n            entry_point(argv)\n        except SystemExit:\n            pass\n"
        "    assert 'usage:' in out.getvalue() or 'extra' in err.getvalue(), (name, out.getvalue(), err.getvalue())\n"
        "    heavy = [module for module in ('torch', 'diffusers') if module in sys.modules]\n"
        "    print('HELP', name, heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    from nbhelpers.cli import COMMANDS

    assert result.stdout.splitlines() == [f"HELP {name} []" for name in [*COMMANDS, "serve gateway"]], result.stderr


def test_running_a_command_registers_it_with_the_listed_help(capsys):
    from nbhelpers import cli

    full = cli.build_parser()
    listed = cli.build_parser(load=[])
    for parser in (full, listed):
        choices = {action.dest: action.help for action in parser._subparsers._group_actions[0]._choices_actions}
        assert choices == {name: command.help for name, command in cli.COMMANDS.items()}
    with pytest.raises(SystemExit):
        cli.main(["bench", "--help"])
    assert "--batch-sizes" in capsys.readouterr().out


def test_the_extras_modules_are_what_pyproject_installs():
    from importlib import metadata

    from nbhelpers import cli
    from nbhelpers.tutorials.setup import requirements

    provided = metadata.packages_distributions()
    for extra, modules in cli.EXTRA_MODULES.items():
        names = {r.name.lower().replace("_", "-") for r in requirements([extra])}
        for module in modules:
            dists = {d.lower().replace("_", "-") for d in provided.get(module, [])}
            assert dists & names, f"{module} is not installed by the [{extra}] extra ({sorted(names)})"


def test_no_feature_module_imports_the_command_line():
    import ast
    from pathlib import Path

    package = Path(__file__).resolve().parents[2] / "nbhelpers"
    offenders = []
    for path in package.rglob("*.py"):
        if "cli" in path.relative_to(package).parts or path.name == "__main__.py":  # the entry point
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            if any(n == "nbhelpers.cli" or n.startswith("nbhelpers.cli.") for n in names):
                offenders.append(str(path.relative_to(package)))
    assert offenders == []


def test_ctrl_c_is_one_line_and_status_130(monkeypatch, capsys):
    import nbhelpers.generation

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(nbhelpers.generation, "generate", interrupted)
    assert main(["generate", "x", "--tiny", "--out", "/tmp/nbhelpers-ctrl-c", "--quiet"]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--seed", "-1"], "seed must be between 0 and 18446744073709551615 (a whole number); got -1."),
        (["--steps", "0"], "num_inference_steps must be between 1 and 1000 (a whole number); got 0."),
        (["--guidance", "nan"], "guidance_scale must be between 0 and 50 (guidance is on above 1); got nan."),
        (["--height", "7"], "height must be a multiple of 64 between 64 and 2048 pixels"),  # deci-v1, the default
        (["--model", "sd-v1-5", "--width", "12"], "width must be a multiple of 8 between 8 and 2048 pixels"),
        (["--num-images", "65"], "num_images must be between 1 and 64 (a whole number); got 65."),
        (["--device", "tpu"], "device 'tpu' is not supported: use cuda, cuda:N, mps or cpu (this machine has: "),
        (["--scheduler", "magic"], "Unknown scheduler 'magic'; choose one of ddim"),
        (["--model", "a" * 300], "Unknown model 'aaaa"),
    ],
    ids=lambda value: value[0] if isinstance(value, list) else "",
)
def test_generate_refuses_hostile_flags_in_one_line(tmp_path, capsys, flags, message):
    assert main(["generate", "an owl", "--tiny", "--out", str(tmp_path / "out"), "--quiet", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nbhelpers generate: error: ") and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not list((tmp_path / "out").glob("*.png"))


def test_generate_with_a_height_alone_makes_the_size_it_records(tmp_path):
    assert (
        main(["generate", "an owl", "--tiny", "--steps", "1", "--height", "128", "--out", str(tmp_path), "--quiet"])
        == 0
    )
    [path] = tmp_path.glob("*.png")
    meta = read_image_metadata(path)
    with Image.open(path) as image:
        assert image.size == (meta["width"], meta["height"]) == (64, 128)


def test_generate_says_the_size_multiple_of_the_model(tmp_path, capsys):
    flags = ["--model", "deci-v1", "--tiny", "--steps", "1", "--height", "96", "--out", str(tmp_path), "--quiet"]
    assert main(["generate", "an owl", *flags]) == 2
    assert "height must be a multiple of 64 between 64 and 2048 pixels" in capsys.readouterr().err


def test_every_error_is_printed_on_one_line():
    import argparse

    from nbhelpers.arguments import run_handler
    from nbhelpers.errors import UserFacingError

    def fails(error):
        def handler(args):
            raise error

        return argparse.Namespace(command="demo", handler=handler)

    cases = [
        (UserFacingError("could not load it:\n  do this\n  or that"), 2, "could not load it: do this or that"),
        (MemoryError(), 1, "out of memory"),
        (RuntimeError("plain bug"), None, None),
    ]
    for error, status, words in cases:
        if status is None:
            with pytest.raises(RuntimeError, match="plain bug"):  # a bug keeps its traceback
                run_handler(fails(error))
            continue
        with contextlib.redirect_stderr(io.StringIO()) as err:
            assert run_handler(fails(error)) == status
        assert len(err.getvalue().splitlines()) == 1 and words in err.getvalue()


def test_a_cuda_out_of_memory_error_is_one_line(capsys):
    import argparse

    import torch

    from nbhelpers.arguments import run_handler

    def handler(args):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB\nmore details")

    assert run_handler(argparse.Namespace(command="generate", handler=handler)) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "out of memory" in err and "fewer images, a smaller size" in err


@pytest.mark.slow
def test_ctrl_c_during_generate_is_one_line_status_130_and_leaves_no_partial_file(tmp_path):
    # A real SIGINT to a real `nbhelpers generate`, sent while its denoising loop runs (1000 steps).
    out = tmp_path / "out"
    command = [sys.executable, "-m", "nbhelpers", "generate", "an owl", "--tiny", "--steps", "1000", "--out", str(out)]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    seen = b""
    deadline = time.monotonic() + 300
    while b"/1000 [" not in seen:  # diffusers' progress bar over the 1000 steps: the loop has started
        assert time.monotonic() < deadline and process.poll() is None, seen.decode(errors="replace")[-2000:]
        if select.select([process.stderr], [], [], 1.0)[0]:
            seen += os.read(process.stderr.fileno(), 4096)
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=120)
    err = (seen + rest).decode(errors="replace")
    assert process.returncode == 130, err[-2000:]
    assert "nbhelpers generate: interrupted (Ctrl-C); no file was left half-written.\n" in err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert sorted(p.name for p in out.iterdir()) == []  # no image, no temporary file


def test_generate_refuses_an_empty_out_and_a_bad_prompt_before_loading(tmp_path, monkeypatch, capsys):
    import nbhelpers.loading

    monkeypatch.setattr(nbhelpers.loading, "load_pipeline", lambda *a, **k: pytest.fail("loaded a model"))
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "an owl", "--tiny", "--out", ""]) == 2
    assert "--out is empty; give the folder to write to." in capsys.readouterr().err
    assert main(["generate", "an owl", "x" * 2001, "--tiny", "--out", "out"]) == 2
    assert "prompt[1] has 2,001 characters; at most 2,000 are accepted" in capsys.readouterr().err
    assert not list(tmp_path.rglob("*.png"))


def test_generate_checks_a_catalog_models_size_multiple_before_loading_it(tmp_path, monkeypatch, capsys):
    import nbhelpers.loading

    monkeypatch.setattr(nbhelpers.loading, "load_pipeline", lambda *a, **k: pytest.fail("loaded a model"))
    assert main(["generate", "an owl", "--model", "deci-v1", "--width", "72", "--out", str(tmp_path)]) == 2
    assert "width must be a multiple of 64 between 64 and 2048 pixels" in capsys.readouterr().err
