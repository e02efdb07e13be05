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
    assert exit_info.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
