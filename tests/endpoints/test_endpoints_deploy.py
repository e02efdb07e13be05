"""One settings object for the service, ``nbhelpers serve`` and the deployment; content safety; the Azure objects."""

import json
import os
from types import SimpleNamespace

import numpy as np
import pytest

from nbhelpers.cli import build_parser
from nbhelpers.endpoints.contract import decode_image
from nbhelpers.endpoints.scoring_service import ScoringService
from nbhelpers.endpoints.settings import EndpointSettings, read_api_key
from nbhelpers.errors import ConfigurationError


def test_settings_round_trip_through_the_environment():
    settings = EndpointSettings(
        model="sd-v1-5", stand_in="tiny", max_rows=2, max_concurrent_requests_per_instance=3, request_timeout_ms=1234
    )
    variables = settings.to_environment()
    assert variables["NBHELPERS_REQUEST_TIMEOUT_MS"] == "1234" and variables["NBHELPERS_STAND_IN"] == "tiny"
    assert EndpointSettings.from_environment(variables) == settings
    assert EndpointSettings.from_environment({}) == EndpointSettings()
    real = EndpointSettings(stand_in="none")  # the real model, whatever the serving process's own environment says
    assert real.to_environment()["NBHELPERS_STAND_IN"] == "none"
    assert EndpointSettings.from_environment(real.to_environment()).stand_in is None
    assert settings.max_in_flight == 6
    assert EndpointSettings.from_environment({"NBHELPERS_MAX_ROWS": " 2.0 "}).max_rows == 2


@pytest.mark.parametrize(
    "variables, message",
    [
        ({"NBHELPERS_MAX_ROWS": "many"}, "NBHELPERS_MAX_ROWS must be a number; got 'many' (str)."),
        ({"NBHELPERS_MAX_ROWS": "1.5"}, "max_rows must be at least 1 (a whole number); got 1.5."),
        ({"NBHELPERS_REQUEST_TIMEOUT_MS": "0"}, "request_timeout_ms must be at least 1 ms (a whole number); got 0."),
    ],
)
def test_bad_settings_are_configuration_errors(variables, message):
    """A bad timeout was a plain ValueError, which the command line could only take for bad input by catching every
    ValueError, library bugs included."""
    with pytest.raises(ConfigurationError) as info:
        EndpointSettings.from_environment(variables)
    assert str(info.value) == message


def test_api_key_comes_from_a_file_or_the_environment(tmp_path):
    (tmp_path / "key").write_text("from-file\n")
    assert read_api_key(tmp_path / "key", {"NBHELPERS_API_KEY": "from-env"}) == "from-file"
    assert read_api_key(None, {"NBHELPERS_API_KEY": "from-env"}) == "from-env"
    assert read_api_key(None, {}) is None
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        read_api_key(tmp_path / "empty")


def test_the_first_line_of_the_key_file_is_the_key_without_a_byte_order_mark(tmp_path):
    """The file was used whole: a second line or a BOM (Windows editors) locked every client out."""
    key_file = tmp_path / "key"
    key_file.write_bytes(b"\xef\xbb\xbf  k3y-ok  \r\nsecond line\r\n")
    assert read_api_key(key_file) == "k3y-ok"
    assert read_api_key(None, {"NBHELPERS_API_KEY": "\ufeffk3y-ok\n"}) == "k3y-ok"


@pytest.mark.parametrize(
    "content, message",
    [
        ("clé-secrète\n", "holds a non-ASCII character at position 3"),
        ("two words\n", "holds a space or control character at position 4"),
        ("\nkey-on-line-two\n", "is empty: put the key on the first line"),
        ("", "is empty"),
    ],
    ids=["non-ascii", "space", "blank-first-line", "empty-file"],
)
def test_a_key_no_client_could_send_is_refused_in_one_line_that_does_not_show_it(tmp_path, content, message):
    key_file = tmp_path / "key"
    key_file.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError) as info:
        read_api_key(key_file)
    assert message in str(info.value) and str(key_file) in str(info.value) and "\n" not in str(info.value)
    assert "secrète" not in str(info.value) and "words" not in str(info.value)
    with pytest.raises(ValueError, match="NBHELPERS_API_KEY"):
        read_api_key(None, {"NBHELPERS_API_KEY": "clé"})


def test_serve_command_line_is_generated_from_the_settings_fields(capsys):
    args = build_parser().parse_args(
        [
            "serve",
            "--max_concurrent_requests_per_instance",
            "2",
            "--request-timeout-ms",
            "5000",
            "--tiny",
            "--api_key_file",
            "k.txt",
            "--header_timeout_s",
            "3",
        ]
    )
    assert (args.max_concurrent_requests_per_instance, args.request_timeout_ms, args.stand_in) == (2, 5000, "tiny")
    assert (args.api_key_file, args.header_timeout_s, args.host, args.port) == ("k.txt", 3.0, "127.0.0.1", 5001)
    assert build_parser().parse_args(["serve", "--max-concurrency", "3"]).max_concurrent_requests_per_instance == 3
    assert build_parser().parse_args(["serve"]).max_concurrent_requests_per_instance == 1
    with pytest.raises(SystemExit):  # a key on the command line is refused: `ps` would show it
        build_parser().parse_args(["serve", "--api-key", "secret"])
    assert "use --api_key_file FILE or set NBHELPERS_API_KEY" in capsys.readouterr().err


def test_serve_help_shows_each_fields_doc(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--request_timeout_ms" in text and "gets 408 and its generation is stopped" in text
    assert "(default: 127.0.0.1)" in text and "--api_key_file" in text


class _FakeSafetyClient:
    def __init__(self, blocked_words):
        self.blocked_words = blocked_words

    def analyze_text(self, options):
        severity = 4 if any(w in options.text for w in self.blocked_words) else 0
        return SimpleNamespace(categories_analysis=[SimpleNamespace(category="Violence", severity=severity)])

    def analyze_image(self, options):
        assert options.image.content[:4] == b"\x89PNG"
        return SimpleNamespace(categories_analysis=[SimpleNamespace(category="Sexual", severity=0)])


def test_content_safety_blanks_blocked_rows(tiny_deci):
    from nbhelpers.endpoints.content_safety import ContentSafetyScreen

    service = ScoringService(tiny_deci, screen=ContentSafetyScreen(_FakeSafetyClient(["gore"]), threshold=2))
    body = json.dumps({"input_data": {"data": ["a fox", "gore everywhere"], "parameters": {"num_inference_steps": 1}}})
    status, rows, _ = service.handle(body, {})
    assert status == 200
    assert [r["nsfw_content_detected"] for r in rows] == [False, True]
    assert np.asarray(decode_image(rows[1]["generated_image"])).max() == 0
    assert np.asarray(decode_image(rows[0]["generated_image"])).max() > 0


def test_no_safety_checker_gives_null():
    from nbhelpers.loading import load_pipeline

    service = ScoringService(
        load_pipeline("sd-v1-4", stand_in="tiny", device="cpu", safety_checker=False, progress=False)
    )
    body = json.dumps({"input_data": {"data": ["x"], "parameters": {"num_inference_steps": 1}}})
    status, rows, _ = service.handle(body)
    assert status == 200 and rows[0]["nsfw_content_detected"] is None


def test_azure_deployment_objects_validate_offline_with_the_same_request_settings():
    from nbhelpers.endpoints.azure_deploy import (
        as_yaml_dict,
        batch_deployment,
        batch_endpoint,
        online_deployment,
        online_endpoint,
    )

    assert as_yaml_dict(online_endpoint("deci-t2i"))["auth_mode"] == "key"
    settings = EndpointSettings(model="deci-v1", max_concurrent_requests_per_instance=2, request_timeout_ms=60_000)
    online = as_yaml_dict(online_deployment("deci-t2i", settings=settings, instance_type="Standard_NC8as_T4_v3"))
    assert online["code_configuration"]["scoring_script"] == "online_score.py"
    assert os.path.isfile(os.path.join(online["code_configuration"]["code"], "online_score.py"))
    assert online["request_settings"] == {"max_concurrent_requests_per_instance": 2, "request_timeout_ms": 60_000}
    assert EndpointSettings.from_environment(online["environment_variables"]) == settings  # what the script reads
    assert online["instance_type"] == "Standard_NC8as_T4_v3" and "liveness_probe" in online
    assert "diffusion-nbhelpers" in json.dumps(online["environment"])
    assert as_yaml_dict(batch_endpoint("deci-batch"))["name"] == "deci-batch"
    batch = as_yaml_dict(batch_deployment("deci-batch", model="azureml:deci:1", compute="gpu-cluster"))
    batch_settings = batch["settings"]
    assert (batch_settings["mini_batch_size"], batch_settings["output_file_name"], batch_settings["output_action"]) == (
        1,
        "predictions.csv",
        "append_row",
    )
    assert batch_settings["error_threshold"] == 0 and batch_settings["retry_settings"]["max_retries"] == 2
    assert batch["code_configuration"]["scoring_script"] == "batch_score.py"
