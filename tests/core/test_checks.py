import math

import numpy as np
import pytest

from nbhelpers.checks import real_number, text, whole_number
from nbhelpers.errors import ConfigurationError


@pytest.mark.parametrize("value, expected", [(3, 3), (3.0, 3), (np.int64(3), 3), (np.float32(3.0), 3)])
def test_whole_numbers_accept_ints_and_whole_valued_floats(value, expected):
    number = whole_number("steps", value, 1, 10)
    assert number == expected and type(number) is int


@pytest.mark.parametrize(
    "value, shown",
    [
        (True, r"True \(bool\)"),
        ("3", r"'3' \(str\)"),
        (3.5, "3.5"),
        (math.nan, "nan"),
        (math.inf, "inf"),
        (None, r"None \(NoneType\)"),
        ([3], r"\[3\] \(list\)"),
        (11, "11"),
        (0, "0"),
        ("x" * 500, r"'xxxx.*\.\.\. \(str\)"),
    ],
)
def test_anything_else_is_one_line_naming_the_setting_range_and_value(value, shown):
    with pytest.raises(
        ConfigurationError, match=rf"^steps must be between 1 and 10 \(a whole number\); got {shown}\.$"
    ):
        whole_number("steps", value, 1, 10)


def test_real_numbers_refuse_bools_strings_nan_and_out_of_range():
    assert real_number("guidance", 7, 0, 50) == 7.0
    for value in (True, "7", math.nan, -math.inf, 50.5):
        with pytest.raises(ConfigurationError, match="guidance must be between 0 and 50"):
            real_number("guidance", value, 0, 50)


def test_text_refuses_non_strings_blank_and_overlong_values():
    assert text("prompt", "an owl", max_chars=10) == "an owl"
    with pytest.raises(ConfigurationError, match=r"prompt must be a string; got b'x' \(bytes\)"):
        text("prompt", b"x", max_chars=10)
    with pytest.raises(ConfigurationError, match="non-empty"):
        text("prompt", " \n", max_chars=10)
    with pytest.raises(ConfigurationError, match=r"prompt has 11 characters; at most 10 are accepted \(why\)"):
        text("prompt", "x" * 11, max_chars=10, why="why")
