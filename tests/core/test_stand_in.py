"""One stand-in value: resolved in one place, carried by the pipeline, marked on everything it makes."""

from __future__ import annotations

import pytest

from nbhelpers.errors import ConfigurationError
from nbhelpers.loading import load_pipeline
from nbhelpers.stand_in import STAND_IN_VARIABLE, resolve_stand_in, stand_in_mark


def test_an_explicit_value_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv(STAND_IN_VARIABLE, "tiny")
    assert resolve_stand_in(None) == "tiny"
    assert resolve_stand_in("toy") == "toy"
    assert resolve_stand_in(" TOY ") == "toy"
    assert resolve_stand_in("none") is None  # the real model, whatever the variable says
    monkeypatch.setenv(STAND_IN_VARIABLE, "")
    assert resolve_stand_in(None) is None
    monkeypatch.delenv(STAND_IN_VARIABLE)
    assert resolve_stand_in(None) is None


def test_a_bad_value_names_where_it_came_from_and_what_is_accepted(monkeypatch):
    with pytest.raises(ConfigurationError, match=r"stand_in='random' is not a stand-in: use one of toy, tiny"):
        resolve_stand_in("random")
    monkeypatch.setenv(STAND_IN_VARIABLE, "1")  # the old NBHELPERS_TINY=1 habit
    with pytest.raises(ConfigurationError, match=r"NBHELPERS_STAND_IN='1' is not a stand-in"):
        resolve_stand_in(None)


def test_marks():
    assert stand_in_mark("toy") == "toy model (shapes)"
    assert stand_in_mark("tiny") == "tiny, random weights"
    assert stand_in_mark(None) == ""


def test_the_loaded_pipeline_carries_the_resolved_value(monkeypatch):
    monkeypatch.setenv(STAND_IN_VARIABLE, "toy")
    pipe = load_pipeline("deci-v1", device="cpu", progress=False)
    assert pipe.nbhelpers_info.stand_in == "toy" and pipe.nbhelpers_info.label == "deci-v1 (toy model (shapes))"
    tiny = load_pipeline("deci-v1", stand_in="tiny", device="cpu", progress=False)
    assert tiny.nbhelpers_info.stand_in == "tiny" and "random weights" in tiny.nbhelpers_info.label


@pytest.mark.parametrize("value", [True, 1, ["toy"]])
def test_a_stand_in_that_is_no_string_is_refused_in_one_line(value):
    with pytest.raises(ConfigurationError, match="is not a stand-in: use one of toy, tiny"):
        resolve_stand_in(value)
