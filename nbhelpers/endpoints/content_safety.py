"""Optional Azure AI Content Safety screen of prompts and generated images.

Configured by ``CONTENT_SAFETY_ENDPOINT`` and ``CONTENT_SAFETY_KEY`` (and ``CONTENT_SAFETY_THRESHOLD``,
default 2): a text or image is blocked when any category (Hate, SelfHarm, Sexual, Violence) has a
severity at or above the threshold. Without the variables no screen runs.
"""

from __future__ import annotations

import io
import os
from typing import Any

from PIL import Image

DEFAULT_THRESHOLD = 2
#: The service's image limits: 50x50 to 7200x7200 pixels, at most 4 MB.
MIN_SIDE, MAX_SIDE, MAX_BYTES = 50, 7200, 4 * 2**20


class ContentSafetyScreen:
    """Screens texts and images with a ``ContentSafetyClient``-like ``client`` (``analyze_text``/``analyze_image``)."""

    def __init__(self, client: Any, threshold: int = DEFAULT_THRESHOLD) -> None:
        self.client = client
        self.threshold = threshold

    @classmethod
    def from_environment(cls) -> ContentSafetyScreen | None:
        """A screen for the configured Azure resource, or ``None`` when it is not configured."""
        endpoint, key = os.environ.get("CONTENT_SAFETY_ENDPOINT"), os.environ.get("CONTENT_SAFETY_KEY")
        if not endpoint or not key:
            return None
        from azure.ai.contentsafety import ContentSafetyClient
        from azure.core.credentials import AzureKeyCredential

        threshold = int(os.environ.get("CONTENT_SAFETY_THRESHOLD", DEFAULT_THRESHOLD))
        return cls(ContentSafetyClient(endpoint, AzureKeyCredential(key)), threshold)

    def _blocked(self, result: Any) -> bool:
        return any((item.severity or 0) >= self.threshold for item in result.categories_analysis)

    def blocks_text(self, text: str) -> bool:
        """Whether ``text`` reaches the threshold in any category."""
        from azure.ai.contentsafety.models import AnalyzeTextOptions

        return self._blocked(self.client.analyze_text(AnalyzeTextOptions(text=text)))

    def blocks_image(self, image: Image.Image) -> bool:
        """Whether ``image`` reaches the threshold (images outside the service's limits are resized to fit)."""
        from azure.ai.contentsafety.models import AnalyzeImageOptions, ImageData

        side = max(image.size)
        if side > MAX_SIDE or min(image.size) < MIN_SIDE:
            scale = MAX_SIDE / side if side > MAX_SIDE else MIN_SIDE / min(image.size)
            width, height = (max(MIN_SIDE, round(side_px * scale)) for side_px in image.size)
            image = image.resize((width, height))
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="JPEG" if image.width * image.height > 1_000_000 else "PNG")
        if buffer.tell() > MAX_BYTES:
            raise ValueError("Image too large for Content Safety (over 4 MB) even after encoding.")
        return self._blocked(self.client.analyze_image(AnalyzeImageOptions(image=ImageData(content=buffer.getvalue()))))
