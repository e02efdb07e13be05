"""FID through torchmetrics: an optional larger run; the Inception network only with torch-fidelity."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from nbhelpers.quality.fid import frechet_inception_distance

HAS_TORCH_FIDELITY = importlib.util.find_spec("torch_fidelity") is not None


class _MeanColour(torch.nn.Module):
    """A stand-in feature network: the mean and spread of each colour channel (6 features)."""

    def forward(self, pictures: torch.Tensor) -> torch.Tensor:
        values = pictures.float() / 255
        return torch.cat([values.mean(dim=(2, 3)), values.std(dim=(2, 3))], dim=1)


def _pictures(count: int, brightness: float, seed: int) -> torch.Tensor:
    noise = torch.rand(count, 3, 16, 16, generator=torch.Generator().manual_seed(seed))
    return ((brightness + 0.3 * noise).clamp(0, 1) * 255).to(torch.uint8)


def test_fid_is_small_for_sets_alike_and_large_for_sets_apart():
    reference = _pictures(40, 0.3, seed=0)
    alike = frechet_inception_distance(reference, _pictures(40, 0.3, seed=1), feature=_MeanColour(), device="cpu")
    apart = frechet_inception_distance(reference, _pictures(40, 0.6, seed=1), feature=_MeanColour(), device="cpu")
    assert 0 <= alike < 0.01 < apart


def test_sets_too_small_or_of_mixed_sizes_are_refused():
    with pytest.raises(ValueError, match="at least 2 reference"):
        frechet_inception_distance(_pictures(1, 0.3, 0), _pictures(4, 0.3, 1), feature=_MeanColour(), device="cpu")
    mixed = [*_pictures(2, 0.3, 0), torch.zeros(3, 8, 8, dtype=torch.uint8)]
    with pytest.raises(ValueError, match="differ in size"):
        frechet_inception_distance(_pictures(4, 0.3, 0), mixed, feature=_MeanColour(), device="cpu")


@pytest.mark.skipif(HAS_TORCH_FIDELITY, reason="torch-fidelity is installed")
def test_the_inception_network_without_torch_fidelity_names_the_extra():
    with pytest.raises(ImportError, match=r"diffusion-nbhelpers\[quality-fid\]"):
        frechet_inception_distance(_pictures(4, 0.3, 0), _pictures(4, 0.3, 1), device="cpu")


@pytest.mark.skipif(
    not HAS_TORCH_FIDELITY,
    reason="torch-fidelity not installed: it pulls torchvision, which pip resolves to a CUDA build of a newer torch "
    "over this CPU-only torch 2.13, and its Inception weights download from GitHub (offline here)",
)
def test_inception_fid_on_random_pictures_warns_about_the_small_sample():
    with pytest.warns(UserWarning, match="strongly biased"):
        value = frechet_inception_distance(_pictures(8, 0.3, 0), _pictures(8, 0.6, 1), device="cpu")
    assert value > 0
