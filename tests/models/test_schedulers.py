"""swap_scheduler keeps the noise schedule a model was trained on and refuses a scheduler that would drop some."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from nbhelpers.catalog import get_spec
from nbhelpers.errors import ConfigurationError
from nbhelpers.models.components import build_scheduler
from nbhelpers.models.schedulers import (
    SCHEDULERS,
    SchedulerMismatchError,
    compatible_schedulers,
    settings_lost,
    swap_scheduler,
)


def _pipe(model: str) -> SimpleNamespace:
    """Something with the catalog model's published scheduler: all swap_scheduler touches."""
    return SimpleNamespace(scheduler=build_scheduler(get_spec(model)))


def test_pndm_and_lms_would_drop_decidiffusions_zero_terminal_snr():
    config = dict(_pipe("deci-v1").scheduler.config)
    assert config["rescale_betas_zero_snr"] is True
    assert settings_lost(config, SCHEDULERS["pndm"]) == ["rescale_betas_zero_snr"]
    assert settings_lost(config, SCHEDULERS["lms"]) == ["rescale_betas_zero_snr"]
    assert compatible_schedulers(config) == ["ddim", "euler", "euler-a", "dpm++", "unipc"]


@pytest.mark.parametrize("name", ["pndm", "lms"])
def test_a_swap_that_would_drop_zero_snr_is_refused_and_changes_nothing(name):
    pipe = _pipe("deci-v1")
    before = pipe.scheduler
    with pytest.raises(SchedulerMismatchError, match="rescale_betas_zero_snr") as caught:
        swap_scheduler(pipe, name)
    assert "ddim" in str(caught.value) and "allow_schedule_change=True" in str(caught.value)
    assert isinstance(caught.value, ConfigurationError)  # the command line prints it in one line
    assert pipe.scheduler is before


def test_allow_schedule_change_swaps_and_warns():
    pipe = _pipe("deci-v1")
    with pytest.warns(UserWarning, match="rescale_betas_zero_snr"):
        swap_scheduler(pipe, "pndm", allow_schedule_change=True)
    assert type(pipe.scheduler) is SCHEDULERS["pndm"]
    assert pipe.scheduler.config.prediction_type == "v_prediction"


@pytest.mark.parametrize("name", ["ddim", "euler", "euler-a", "dpm++", "unipc"])
def test_a_compatible_swap_keeps_every_training_setting(name, recwarn):
    pipe = _pipe("deci-v1")
    swap_scheduler(pipe, name)
    config = pipe.scheduler.config
    assert type(pipe.scheduler) is SCHEDULERS[name]
    assert config.rescale_betas_zero_snr is True
    assert (config.prediction_type, config.timestep_spacing) == ("v_prediction", "trailing")
    assert not [w for w in recwarn if issubclass(w.category, UserWarning) and "dropped" in str(w.message)]


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_every_scheduler_takes_an_sd_model_without_zero_snr(name):
    pipe = _pipe("sd-v1-5")
    swap_scheduler(pipe, f"  {name.upper()} ")
    assert type(pipe.scheduler) is SCHEDULERS[name]
    assert pipe.scheduler.config.prediction_type == "epsilon"


def test_an_unknown_name_lists_the_known_ones():
    with pytest.raises(ConfigurationError, match="choose one of ddim, pndm"):
        swap_scheduler(_pipe("sd-v1-5"), "magic")
