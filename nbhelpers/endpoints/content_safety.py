"""Optional Azure AI Content Safety screen of prompts and generated images.

Configured by ``CONTENT_SAFETY_ENDPOINT`` and ``CONTENT_SAFETY_KEY`` (and ``CONTENT_SAFETY_THRESHOLD``,
default 2): a text or image is blocked when any category (Hate, SelfHarm, Sexual, Violence) has a
severity at or above the threshold. Without the variables no screen runs.

:class:`WordListSafetyClient` stands in for the service offline: it answers with the service's own result types,
from a word list, so the screen and everything behind it can be rehearsed without an Azure resource. It is not a
classifier.
"""

from __future__ import annotations

import io
import os
import re
from typing import Any

from PIL import Image

# azure-ai-contentsafety (the optional [azure] extra) is imported inside the functions that use it: the screen is
# off without its variables, and the gateway imports this module (through scoring_service).

DEFAULT_THRESHOLD = 2
#: The harm categories the service scores, by their names in its answers.
CATEGORIES = ("Hate", "SelfHarm", "Sexual", "Violence")
#: The severities the service answers with by default (its four-level output).
SEVERITIES = (0, 2, 4, 6)
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

    @staticmethod
    def _severities(result: Any) -> dict[str, int]:
        return {
            str(getattr(item.category, "value", item.category)): item.severity or 0
            for item in result.categories_analysis
        }

    def _blocked(self, severities: dict[str, int]) -> bool:
        return any(severity >= self.threshold for severity in severities.values())

    def text_severities(self, text: str) -> dict[str, int]:
        """The service's severity for ``text`` in each category, e.g. ``{"Hate": 0, ..., "Violence": 4}``."""
        from azure.ai.contentsafety.models import AnalyzeTextOptions

        return self._severities(self.client.analyze_text(AnalyzeTextOptions(text=text)))

    def blocks_text(self, text: str) -> bool:
        """Whether ``text`` reaches the threshold in any category."""
        return self._blocked(self.text_severities(text))

    def blocks_image(self, image: Image.Image) -> bool:
        """Whether ``image`` reaches the threshold (images outside the service's limits are resized to fit)."""
        return self._blocked(self.image_severities(image))

    def image_severities(self, image: Image.Image) -> dict[str, int]:
        """The service's severity for ``image`` in each category (resized first when outside the service's limits)."""
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
        options = AnalyzeImageOptions(image=ImageData(content=buffer.getvalue()))
        return self._severities(self.client.analyze_image(options))


class WordListSafetyClient:
    """An offline stand-in for ``azure.ai.contentsafety.ContentSafetyClient`` that scores texts by a word list.

    A text gets, in each category, the highest severity of the listed words it contains (whole words, any case),
    else 0; every image gets 0, since a word list cannot look at pictures. The answers are the service's own
    result types (``AnalyzeTextResult``, ``AnalyzeImageResult``), so :class:`ContentSafetyScreen` treats it as the
    real client. It is not a classifier: use it to rehearse the screen offline, never to screen real traffic.

    Args:
        words: ``{word: (category, severity)}``, a category of :data:`CATEGORIES` and a severity of
            :data:`SEVERITIES`, e.g. ``{"bleeding": ("Violence", 4)}``.
    """

    def __init__(self, words: dict[str, tuple[str, int]]) -> None:
        for word, (category, severity) in words.items():
            if category not in CATEGORIES or severity not in SEVERITIES:
                raise ValueError(
                    f"{word!r}: ({category!r}, {severity!r}) is not a category of {CATEGORIES} with a severity of "
                    f"{SEVERITIES}."
                )
        self.words = {word.lower(): entry for word, entry in words.items()}

    def analyze_text(self, options: Any) -> Any:
        """Severities of ``options.text`` (an ``AnalyzeTextOptions``) from the word list."""
        from azure.ai.contentsafety.models import AnalyzeTextResult, TextCategoriesAnalysis

        severities = dict.fromkeys(CATEGORIES, 0)
        for word in re.findall(r"[\w']+", options.text.lower()):
            category, severity = self.words.get(word, (None, 0))
            if category is not None:
                severities[category] = max(severities[category], severity)
        return AnalyzeTextResult(
            categories_analysis=[TextCategoriesAnalysis(category=c, severity=s) for c, s in severities.items()]
        )

    def analyze_image(self, options: Any) -> Any:
        """Severity 0 in every category: the stand-in cannot see pictures."""
        from azure.ai.contentsafety.models import AnalyzeImageResult, ImageCategoriesAnalysis

        return AnalyzeImageResult(
            categories_analysis=[ImageCategoriesAnalysis(category=c, severity=0) for c in CATEGORIES]
        )
