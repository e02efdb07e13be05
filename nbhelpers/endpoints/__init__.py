"""Azure-ML-style online and batch endpoints, served and scored locally (notebook 04).

- :mod:`~nbhelpers.endpoints.contract`: the text-to-image request/response JSON and its validation.
- :mod:`~nbhelpers.endpoints.scoring_service`: model loading and scoring behind the scoring scripts.
- :mod:`~nbhelpers.endpoints.scoring`: the Azure ML entry scripts (``online_score.py``, ``batch_score.py``).
- :mod:`~nbhelpers.endpoints.serving`: ``nbhelpers serve`` and ``LocalServer`` (Microsoft's ``azmlinfsrv``).
- :mod:`~nbhelpers.endpoints.client`: ``EndpointClient`` for a local or managed endpoint.
- :mod:`~nbhelpers.endpoints.batch_runner`: resumable local batch scoring of CSV prompt files.
- :mod:`~nbhelpers.endpoints.azure_deploy`: azure-ai-ml deployment objects.
- :mod:`~nbhelpers.endpoints.content_safety`: optional Azure AI Content Safety screening.
"""
