"""Rehearsals of the learner's path, run as a new user would, outside the project's own virtual environment.

- ``python -m rehearsals.colab``: a fresh virtual environment holding only what a Colab runtime preinstalls that
  matters here; each notebook alone in an empty folder; its first cell clones the repository and installs the rest.
- ``python -m rehearsals.real_size``: the real code path (no stand-in), offline, against full-size random-weight
  checkpoints in a Hugging Face cache under the real repo ids.
"""
