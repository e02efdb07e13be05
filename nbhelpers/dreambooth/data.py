"""DreamBooth data: subject photos loaded and checked, class images, and an offline synthetic subject.

Images may be JPEG, PNG or WebP; EXIF orientation is applied (phone photos come out upright), then each
image is resized so its short side equals the training resolution and centre-cropped (or randomly cropped)
to a square, optionally flipped, and scaled to ``[-1, 1]``.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from huggingface_hub import snapshot_download
from PIL import Image, ImageDraw, ImageOps, UnidentifiedImageError

from nbhelpers.atomic import atomic_open
from nbhelpers.errors import ConfigurationError
from nbhelpers.stand_in import STAND_IN_VARIABLE, resolve_stand_in
from nbhelpers.toy.shapes import Scene
from nbhelpers.training.conventions import mix_seed

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")

#: The five dog photos of the DreamBooth tutorials (a dataset repo on the Hugging Face hub).
EXAMPLE_SUBJECT_REPO = "diffusers/dog-example"


class DreamBoothDataError(ConfigurationError):
    """Unusable training data; the message names the file or folder and what to do."""


def image_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The JPEG/PNG/WebP files of ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DreamBoothDataError(
            f"Image folder {folder} does not exist."
            if not folder.exists()
            else f"{folder} is a file; give the folder that holds the photos."
        )
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def load_images(folder: str | os.PathLike[str], *, min_side: int) -> list[Image.Image]:
    """Open every image of ``folder`` upright (EXIF orientation applied) as RGB.

    Raises:
        DreamBoothDataError: the folder has no images, a file cannot be read, or an image's short side is
            below ``min_side`` pixels (it would be upscaled into a blur).
    """
    files = image_files(folder)
    if not files:
        raise DreamBoothDataError(
            f"No images in {folder}: put 3-10 photos of your subject there (.jpg, .png or .webp)."
        )
    images = []
    for path in files:
        try:
            with Image.open(path) as raw:
                image = ImageOps.exif_transpose(raw).convert("RGB")
        except (UnidentifiedImageError, OSError) as err:
            raise DreamBoothDataError(f"Cannot read {path} as an image ({err}); remove or replace it.") from None
        if min(image.size) < min_side:
            raise DreamBoothDataError(
                f"{path} is {image.width}x{image.height}; its short side must be at least {min_side} px."
            )
        images.append(image)
    return images


def preprocess(
    image: Image.Image,
    resolution: int,
    *,
    center_crop: bool = True,
    flip: bool = False,
    rng: random.Random | None = None,
) -> torch.Tensor:
    """Resize (short side to ``resolution``), crop to a square, optionally flip; ``(3, R, R)`` in ``[-1, 1]``."""
    rng = rng or random.Random(0)
    scale = resolution / min(image.size)
    width, height = max(resolution, round(image.width * scale)), max(resolution, round(image.height * scale))
    image = image.resize((width, height), Image.Resampling.BICUBIC)
    if center_crop:
        left, top = (width - resolution) // 2, (height - resolution) // 2
    else:
        left, top = rng.randint(0, width - resolution), rng.randint(0, height - resolution)
    image = image.crop((left, top, left + resolution, top + resolution))
    if flip and rng.random() < 0.5:
        image = ImageOps.mirror(image)
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


@dataclass
class Example:
    """One training example: pixels ``(3, R, R)`` in ``[-1, 1]`` and the prompt's token ids ``(77,)``."""

    pixels: torch.Tensor
    input_ids: torch.Tensor


class DreamBoothDataset(torch.utils.data.Dataset):
    """Instance images with the instance prompt, paired (for prior preservation) with class images.

    Item ``i`` is ``(instance example, class example or None)``; the length is the number of instance images
    (class images cycle). Random crops and flips depend only on ``(seed, epoch, index)``, so a resumed run
    sees the same augmented pixels as an uninterrupted one (``set_epoch`` is called by accelerate's loader).
    """

    def __init__(
        self,
        instance_images: list[Image.Image],
        instance_prompt: str,
        tokenizer,
        resolution: int,
        *,
        class_images: list[Image.Image] | None = None,
        class_prompt: str | None = None,
        center_crop: bool = True,
        random_flip: bool = False,
        seed: int = 0,
    ) -> None:
        self.instance_images = instance_images
        self.class_images = class_images or []
        self.resolution = resolution
        self.center_crop = center_crop
        self.random_flip = random_flip
        self.seed = seed
        self.epoch = 0
        self.instance_ids = self._tokenize(tokenizer, instance_prompt)
        self.class_ids = self._tokenize(tokenizer, class_prompt) if class_prompt else None

    @staticmethod
    def _tokenize(tokenizer, prompt: str) -> torch.Tensor:
        return tokenizer(
            prompt, padding="max_length", truncation=True, max_length=tokenizer.model_max_length, return_tensors="pt"
        ).input_ids[0]

    def __len__(self) -> int:
        return len(self.instance_images)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _example(self, image: Image.Image, ids: torch.Tensor, rng: random.Random) -> Example:
        pixels = preprocess(image, self.resolution, center_crop=self.center_crop, flip=self.random_flip, rng=rng)
        return Example(pixels, ids)

    def __getitem__(self, index: int) -> tuple[Example, Example | None]:
        rng = random.Random(mix_seed(self.seed, self.epoch, index))  # the same in every process and resume
        instance = self._example(self.instance_images[index], self.instance_ids, rng)
        if not self.class_images or self.class_ids is None:
            return instance, None
        return instance, self._example(self.class_images[index % len(self.class_images)], self.class_ids, rng)


class EpochShuffleSampler(torch.utils.data.Sampler[int]):
    """A new order of ``range(size)`` each epoch, a function of ``(seed, epoch)`` alone.

    The data order of any step can be rebuilt from the step number, which is what makes a resumed run
    continue exactly as the uninterrupted one. accelerate calls :meth:`set_epoch` (also under several
    processes, where it shards the batches of this order).
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self):  # noqa: ANN204 - Sampler protocol
        generator = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
        return iter(torch.randperm(self.size, generator=generator).tolist())


def collate(batch: list[tuple[Example, Example | None]]) -> dict[str, torch.Tensor | int]:
    """Stack a batch; with prior preservation the class examples follow the instance ones.

    Returns ``{"pixels": (N, 3, R, R), "input_ids": (N, 77), "num_instance": B}`` with ``N = B`` or ``2B``.
    """
    examples = [instance for instance, _ in batch] + [prior for _, prior in batch if prior is not None]
    return {
        "pixels": torch.stack([e.pixels for e in examples]),
        "input_ids": torch.stack([e.input_ids for e in examples]),
        "num_instance": len(batch),
    }


def save_uploaded_photos(uploaded: dict[str, bytes], folder: str | os.PathLike[str]) -> Path:
    """Write uploaded photos (``{file name: content}``, what ``google.colab.files.upload()`` returns) into
    ``folder`` and return it. Only the names' last part is used, so a name cannot point outside ``folder``.

    Raises:
        DreamBoothDataError: no upload has a .jpg/.jpeg/.png/.webp name (what was given is named).
    """
    folder = Path(folder)
    photos = {Path(name).name: data for name, data in uploaded.items() if Path(name).suffix.lower() in IMAGE_SUFFIXES}
    if not photos:
        raise DreamBoothDataError(
            f"None of the uploaded files {sorted(uploaded)} is a photo (.jpg, .png or .webp); upload 3-10 photos."
        )
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in photos.items():
        with atomic_open(folder / name, "wb") as file:
            file.write(data)
    return folder


def make_synthetic_subject(folder: str | os.PathLike[str], count: int = 6, size: int = 128, seed: int = 0) -> Path:
    """Draw ``count`` photos of one made-up toy (an orange, black-eared round critter) on varied backgrounds.

    An offline stand-in for the subject photos of DreamBooth (the public ``diffusers/dog-example`` set needs
    the hub). Returns the folder.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for index in range(count):
        background = tuple(rng.randint(90, 230) for _ in range(3))
        image = Image.new("RGB", (size, size), background)
        draw = ImageDraw.Draw(image)
        radius = rng.randint(size // 5, size // 3)
        cx, cy = rng.randint(radius, size - radius), rng.randint(radius, size - radius)
        for side in (-1, 1):
            ear = (cx + side * radius * 0.6, cy - radius * 0.9)
            draw.ellipse(
                [ear[0] - radius * 0.3, ear[1] - radius * 0.3, ear[0] + radius * 0.3, ear[1] + radius * 0.3],
                fill=(20, 20, 20),
            )
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=(240, 130, 20))
        for side in (-1, 1):
            eye = (cx + side * radius * 0.35, cy - radius * 0.15)
            draw.ellipse(
                [eye[0] - radius * 0.12, eye[1] - radius * 0.12, eye[0] + radius * 0.12, eye[1] + radius * 0.12],
                fill=(0, 0, 0),
            )
        image.save(folder / f"subject-{index:02d}.png")
    return folder


def make_toy_subject(folder: str | os.PathLike[str], count: int = 6, seed: int = 0) -> Path:
    """Draw ``count`` 64 px pictures of a red five-pointed star on a white background, at varied places and sizes.

    The subject for DreamBooth on the toy "shapes" models: a shape they never saw (they know circles, squares
    and triangles), so whether training taught it can be measured (:func:`nbhelpers.toy.evaluate.shape_likeness`).
    Returns the folder.
    """

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for index in range(count):
        extent = rng.uniform(0.22, 0.32)
        centre = (rng.uniform(extent + 0.04, 1 - extent - 0.04), rng.uniform(extent + 0.04, 1 - extent - 0.04))
        image, _ = Scene(shape="star", colour="red", background="white", centre=centre, extent=extent).render()
        image.save(folder / f"star-{index:02d}.png")
    return folder


def example_subject(folder: str | os.PathLike[str], *, stand_in: str | None = None) -> Path:
    """A folder of subject photos for the tutorial: the hub's dog photos, or for a stand-in a drawn subject.

    With the ``"toy"`` stand-in the pictures are the star of :func:`make_toy_subject`, with ``"tiny"`` the critter of
    :func:`make_synthetic_subject` (no network either way); otherwise the dataset ``diffusers/dog-example`` is
    downloaded into ``folder`` (once; later calls reuse it).

    Raises:
        DreamBoothDataError: the download failed; the message says how to go offline or bring your own photos.
    """
    folder = Path(folder)
    resolved = resolve_stand_in(stand_in)
    if resolved == "toy":
        return make_toy_subject(folder)
    if resolved == "tiny":
        return make_synthetic_subject(folder)
    if folder.is_dir() and image_files(folder):
        return folder

    try:
        snapshot_download(
            EXAMPLE_SUBJECT_REPO,
            repo_type="dataset",
            local_dir=folder,
            allow_patterns=[f"*{suffix}" for suffix in IMAGE_SUFFIXES],
        )
    except Exception as err:  # noqa: BLE001 - offline, auth, HTTP: every failure gets the same advice
        raise DreamBoothDataError(
            f"Could not download the example photos {EXAMPLE_SUBJECT_REPO!r} ({type(err).__name__}: {err}). "
            "Check your connection, or put your own photos in a folder and pass it as the instance folder, "
            "or use an offline stand-in (STAND_IN = 'toy' / " + STAND_IN_VARIABLE + "=toy)."
        ) from None
    return folder
