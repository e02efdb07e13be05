"""Azure-ML-style online and batch endpoints, served and scored locally (notebook 04).

- :mod:`~nbhelpers.endpoints.contract`: the text-to-image request/response JSON and its validation.
- :mod:`~nbhelpers.endpoints.settings`: ``EndpointSettings``, the one settings object (``NBHELPERS_*`` variables,
  ``nbhelpers serve`` flags, Azure ``request_settings``).
- :mod:`~nbhelpers.endpoints.scoring_service`: model loading and scoring behind the scoring scripts.
- :mod:`~nbhelpers.endpoints.scoring`: the Azure ML entry scripts (``online_score.py``, ``batch_score.py``).
- :mod:`~nbhelpers.endpoints.serving`: ``nbhelpers serve`` and ``LocalServer`` (Microsoft's ``azmlinfsrv`` app behind
  the gateway).
- :mod:`~nbhelpers.endpoints.gateway`: the asyncio gateway that answers like a managed endpoint (401/408/413/424/429).
- :mod:`~nbhelpers.endpoints.client`: ``EndpointClient`` for a local or managed endpoint.
- :mod:`~nbhelpers.endpoints.batch_runner`: resumable local batch scoring of CSV prompt files (``score_row`` is shared
  with the batch scoring script).
- :mod:`~nbhelpers.endpoints.azure_deploy`: azure-ai-ml deployment objects.
- :mod:`~nbhelpers.endpoints.content_safety`: optional Azure AI Content Safety screening.
"""
