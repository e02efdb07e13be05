"""DAAM word heat maps (notebook 05), with the reference ``daam`` package's API.

One job per module, following the reference's split:

- :mod:`~nbhelpers.daam.trace`: ``trace`` (records the maps of the generations run inside it and aggregates
  them, ``compute_global_heat_map``) and ``set_seed``.
- :mod:`~nbhelpers.daam.hooks`: finds the cross-attention layers, the attention processor that captures
  their probabilities, and the pre-hook that records the spatial shape entering each transformer.
- :mod:`~nbhelpers.daam.alignment`: a map's exact factor on the latent grid, and upsampling it onto the latent.
- :mod:`~nbhelpers.daam.heatmap`: ``GlobalHeatMap`` / ``WordHeatMap``, aggregation, plotting and saving.
- :mod:`~nbhelpers.daam.words`: which token positions a prompt word occupies.
- :mod:`~nbhelpers.daam.anatomy`: what one cross-attention layer computes, as the tensor shapes of a traced run.
- :mod:`~nbhelpers.daam.measures`: numbers from the maps: attention shares, masks, two words' overlap, settling.

    from nbhelpers.daam import set_seed, trace
"""

from nbhelpers.daam.heatmap import GlobalHeatMap, WordHeatMap
from nbhelpers.daam.trace import set_seed, trace
from nbhelpers.daam.words import WordCutOffError, WordNotInPromptError

__all__ = ["GlobalHeatMap", "WordCutOffError", "WordHeatMap", "WordNotInPromptError", "set_seed", "trace"]
