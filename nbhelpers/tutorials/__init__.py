"""What the notebooks show around the lessons themselves.

- :mod:`~nbhelpers.tutorials.bootstrap`: the notebooks' first cell and "Open in Colab" badges, generated from
  ``pyproject.toml`` (``python -m nbhelpers.tutorials.bootstrap``).
- :mod:`~nbhelpers.tutorials.expectations`: download sizes and estimated T4 run times shown at the top of each
  notebook (computed estimates, labelled as such).
"""
