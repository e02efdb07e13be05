"""DAAM word heat maps (notebook 05), with the reference ``daam`` package's API.

- :mod:`~nbhelpers.daam.trace`: ``trace`` (hooks the cross-attention layers during generation),
  ``GlobalHeatMap`` / ``WordHeatMap`` and ``set_seed``.
- :mod:`~nbhelpers.daam.words`: which token positions a prompt word occupies.

    from nbhelpers.daam import set_seed, trace
"""

from nbhelpers.daam.trace import GlobalHeatMap, WordHeatMap, set_seed, trace
from nbhelpers.daam.words import WordNotInPromptError

__all__ = ["GlobalHeatMap", "WordHeatMap", "WordNotInPromptError", "set_seed", "trace"]
