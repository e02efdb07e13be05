import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from nbhelpers.errors import ConfigurationError
from nbhelpers.images import image_grid, read_image_metadata, save_image, show_images, to_uint8_array


def _solid(color, size=(16, 12)):
    return Image.new("RGB", size, color)


def test_to_uint8_array_from_pil_and_float():
    assert to_uint8_array(_solid((10, 20, 30))).shape == (12, 16, 3)
    floats = np.full((4, 5, 3), 0.5, dtype=np.float32)
    arr = to_uint8_array(floats)
    assert arr.dtype == np.uint8 and arr[0, 0, 0] == 128
    with pytest.raises(ValueError, match="shape"):
        to_uint8_array(np.zeros((2, 2, 2, 2)))


def test_image_grid_layout_and_pixels():
    images = [_solid((255, 0, 0)), _solid((0, 255, 0)), _solid((0, 0, 255))]
    grid = image_grid(images, rows=2, cols=2)
    assert grid.size == (32, 24)
    assert grid.getpixel((0, 0)) == (255, 0, 0)
    assert grid.getpixel((16, 0)) == (0, 255, 0)
    assert grid.getpixel((0, 12)) == (0, 0, 255)
    assert grid.getpixel((20, 20)) == (255, 255, 255)  # empty cell
    assert image_grid(images).size == (32, 24)  # as square as possible
    with pytest.raises(ValueError, match="holds 2"):
        image_grid(images, rows=1, cols=2)


def test_save_image_round_trips_metadata_and_leaves_no_temp_files(tmp_path):
    path = save_image(
        _solid((1, 2, 3)),
        tmp_path / "out" / "a.png",
        prompt="an owl",
        seed=7,
        steps=30,
        model="deci-v1",
        guidance_scale=7.5,
    )
    assert path.exists()
    assert read_image_metadata(path) == {
        "prompt": "an owl",
        "seed": 7,
        "steps": 30,
        "model": "deci-v1",
        "guidance_scale": 7.5,
    }
    with Image.open(path) as image:
        assert image.info["prompt"] == "an owl"
        assert image.getpixel((0, 0)) == (1, 2, 3)
    assert [p.name for p in path.parent.iterdir()] == ["a.png"]
    with pytest.raises(ValueError, match=".png"):
        save_image(_solid((0, 0, 0)), tmp_path / "a.jpg", prompt="x", seed=0, steps=1, model="m")


def test_show_images_accepts_pil_lists(monkeypatch):
    import ipyplot

    seen = {}

    def fake_plot_images(images, labels, img_width, max_images):
        seen["types"] = {type(i) for i in images}
        seen["labels"] = labels

    monkeypatch.setattr(ipyplot, "plot_images", fake_plot_images)
    show_images([_solid((0, 0, 0)), _solid((9, 9, 9))], ["a", "b"])
    assert seen == {"types": {np.ndarray}, "labels": ["a", "b"]}
    with pytest.raises(ValueError, match="one label per image"):
        show_images([_solid((0, 0, 0))], ["a", "b"])


def test_show_images_renders_with_real_ipyplot():
    # ipyplot 1.1.2 itself fails on a list of PIL images; through show_images it must work.
    show_images([_solid((0, 0, 0)), _solid((200, 10, 10))], ["black", "red"], img_width=32)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"rows": 0}, r"rows must be at least 1 \(a whole number\)"),
        ({"cols": -2}, r"cols must be at least 1 \(a whole number\)"),
        ({"rows": 1.5}, r"rows must be at least 1 \(a whole number\); got 1.5"),
        ({"padding": -1}, "padding must be between 0 and 1024 pixels"),
        ({"padding": 10**9}, "padding must be between 0 and 1024 pixels"),
    ],
)
def test_image_grid_refuses_hostile_layouts(kwargs, match):
    with pytest.raises(ConfigurationError, match=match):
        image_grid([_solid((0, 0, 0))] * 2, **kwargs)


def test_save_image_refuses_a_folder_a_file_in_the_way_and_non_json_settings(tmp_path):
    args = {"prompt": "x", "seed": 0, "steps": 1, "model": "m"}
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(ConfigurationError, match="folder.png is a folder; give the path of a .png file"):
        save_image(_solid((0, 0, 0)), tmp_path / "folder.png", **args)
    (tmp_path / "file").write_text("in the way")
    with pytest.raises(ConfigurationError, match="Cannot create the folder .*file: a file is in the way"):
        save_image(_solid((0, 0, 0)), tmp_path / "file" / "a.png", **args)
    with pytest.raises(ConfigurationError, match="must be JSON values"):
        save_image(_solid((0, 0, 0)), tmp_path / "a.png", **args, guidance_scale=float("nan"))
    with pytest.raises(ConfigurationError, match="must be JSON values"):
        save_image(_solid((0, 0, 0)), tmp_path / "a.png", **args, latents=object())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "folder.png"]  # nothing half-written


def test_reading_metadata_from_what_is_no_image_is_one_line(tmp_path):
    (tmp_path / "text.png").write_text("not a png")
    for path in (tmp_path, tmp_path / "missing.png", tmp_path / "text.png"):
        with pytest.raises(ConfigurationError, match="Cannot read .* as an image"):
            read_image_metadata(path)
    forged = PngImagePlugin.PngInfo()
    forged.add_text("nbhelpers", "[1, 2")
    _solid((0, 0, 0)).save(tmp_path / "forged.png", pnginfo=forged)
    with pytest.raises(ConfigurationError, match="metadata that is not a JSON object"):
        read_image_metadata(tmp_path / "forged.png")
    _solid((0, 0, 0)).save(tmp_path / "plain.png")
    assert read_image_metadata(tmp_path / "plain.png") == {}
