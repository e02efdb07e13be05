"""Online (real-time) endpoint scoring script for the Azure ML text-to-image contract.

Run locally with Microsoft's server, exactly as managed online endpoints run it::

    NBHELPERS_MODEL=deci-v1 azmlinfsrv --entry_script nbhelpers/endpoints/scoring/online_score.py --port 5001

or, behind a gateway that answers like the managed endpoint (auth, limits, 408/429/424), ``nbhelpers serve``.
Configuration: :mod:`nbhelpers.endpoints.settings`.
"""

from __future__ import annotations

from azureml_inference_server_http.api.aml_response import AMLResponse

from nbhelpers.endpoints.scoring_service import ScoringService

service: ScoringService | None = None


def init() -> None:
    """Load the model once when the deployment starts."""
    global service
    service = ScoringService.from_environment()


def run(raw_data: str, request_headers: dict) -> AMLResponse:
    """Score one request body; returns the contract's JSON with the right status and headers."""
    if service is None:
        return AMLResponse(
            {"error": {"status": 503, "message": "the model is still loading"}},
            503,
            {"Retry-After": "5"},
            json_str=True,
        )
    status, body, headers = service.handle(raw_data, request_headers)
    headers = {k: v for k, v in headers.items() if k != "Content-Type"}
    return AMLResponse(body, status, headers, json_str=True)
