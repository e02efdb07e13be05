"""How outputs of the offline stand-ins are labelled, so nobody takes them for the real model's results.

Kept free of heavy imports: the endpoint gateway (no torch) prints these too.
"""

from __future__ import annotations

#: How every picture, chart and label made from the offline tiny stand-ins is marked.
TINY_MARK = "tiny, random weights"
#: How every picture, chart and label made with a trained toy "shapes" model is marked.
TOY_MARK = "toy model (shapes)"


def stand_in_mark(tiny: bool, toy: bool = False) -> str:
    """The label every output of a stand-in carries: ``"tiny, random weights"``, ``"toy model (shapes)"`` or
    ``""`` (the real model)."""
    return TINY_MARK if tiny else TOY_MARK if toy else ""
