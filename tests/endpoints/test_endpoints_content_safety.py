"""The Content Safety screen and its offline stand-in client (a word list answering with the service's types)."""

import io

import pytest
from azure.ai.contentsafety.models import AnalyzeImageResult, AnalyzeTextResult
from PIL import Image

from nbhelpers.endpoints.content_safety import CATEGORIES, ContentSafetyScreen, WordListSafetyClient

WORDS = {"Bleeding": ("Violence", 4), "gore": ("Violence", 6), "slur": ("Hate", 2)}


def test_the_stand_in_scores_listed_whole_words_with_the_services_types():
    client = WordListSafetyClient(WORDS)
    screen = ContentSafetyScreen(client, threshold=4)
    assert screen.text_severities("A dog BLEEDING, then gore; a slur") == {
        "Hate": 2,
        "SelfHarm": 0,
        "Sexual": 0,
        "Violence": 6,
    }
    assert screen.text_severities("bleedingly gorey") == dict.fromkeys(CATEGORIES, 0)  # whole words only
    assert screen.blocks_text("a dog bleeding") and not screen.blocks_text("a slur")  # 2 is below threshold 4
    assert not screen.blocks_text("a photograph of an astronaut riding a horse")
    from azure.ai.contentsafety.models import AnalyzeTextOptions

    assert isinstance(client.analyze_text(AnalyzeTextOptions(text="x")), AnalyzeTextResult)


def test_the_stand_in_cannot_see_pictures_and_images_are_fitted_to_the_services_limits():
    seen = []

    class Recording(WordListSafetyClient):
        def analyze_image(self, options):
            seen.append(Image.open(io.BytesIO(options.image.content)).size)
            return super().analyze_image(options)

    screen = ContentSafetyScreen(Recording(WORDS))
    assert screen.image_severities(Image.new("RGB", (64, 64), "red")) == dict.fromkeys(CATEGORIES, 0)
    assert not screen.blocks_image(Image.new("RGB", (20, 30)))
    assert seen == [(64, 64), (50, 75)]  # the service takes 50x50 to 7200x7200 px
    assert isinstance(WordListSafetyClient({}).analyze_image(None), AnalyzeImageResult)


@pytest.mark.parametrize("entry", [("Violent", 4), ("Violence", 3)])
def test_an_unknown_category_or_severity_is_refused(entry):
    with pytest.raises(ValueError, match="is not a category of"):
        WordListSafetyClient({"word": entry})


def test_no_screen_without_the_endpoint_and_key(monkeypatch):
    monkeypatch.delenv("CONTENT_SAFETY_ENDPOINT", raising=False)
    monkeypatch.setenv("CONTENT_SAFETY_KEY", "k")
    assert ContentSafetyScreen.from_environment() is None
    monkeypatch.setenv("CONTENT_SAFETY_ENDPOINT", "https://example.cognitiveservices.azure.com/")
    monkeypatch.setenv("CONTENT_SAFETY_THRESHOLD", "4")
    screen = ContentSafetyScreen.from_environment()  # builds the real client; nothing is sent
    assert screen is not None and screen.threshold == 4 and type(screen.client).__name__ == "ContentSafetyClient"
