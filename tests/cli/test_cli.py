import os
import stat
import subprocess
import sys

import pytest

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
    assert main(["generate", "x", "--tiny", "--out", str(tmp_path), "--height", "100"]) == 2
    assert "height must be a multiple of 8" in capsys.readouterr().err


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

    monkeypatch.setitem(cli.COMMANDS, "broken", cli.Command("nbhelpers.cli.no_such_module"))
    with pytest.raises(ModuleNotFoundError, match="no_such_module"):
        cli.build_parser()


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
