"""What the notebooks show around the lessons themselves.

- :mod:`~nbhelpers.tutorials.bootstrap`: the notebooks' first cell and "Open in Colab" badges, generated from
  ``pyproject.toml`` (``python -m nbhelpers.tutorials.bootstrap``).
- :mod:`~nbhelpers.tutorials.expectations`: download sizes and estimated T4 run times shown at the top of each
  notebook (computed estimates, labelled as such).
- :mod:`~nbhelpers.tutorials.setup`: what the first cell runs, ``set_up(extras)``: installs what a notebook's extras
  need that is missing or too old, and says so.
- :mod:`~nbhelpers.tutorials.docs`: the figures in ``docs/`` rendered from their records
  (``python -m nbhelpers.tutorials.docs``).
"""
