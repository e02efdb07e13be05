"""The Azure ML text-to-image contract: validation, hostile JSON, and the scoring service without HTTP."""

import json
import threading

import numpy as np
import pytest

from nbhelpers.checks import MAX_SEED
from nbhelpers.endpoints.contract import ContractError, decode_image, parse_request
from nbhelpers.endpoints.scoring_service import ScoringService, bearer_key
from nbhelpers.endpoints.settings import EndpointSettings
from nbhelpers.generation import pipeline_size_multiple as size_multiple
from tests.endpoints.endpoint_cases import BAD_REQUESTS, HOSTILE_BODIES, with_steps


@pytest.mark.parametrize("body, status, field, message", BAD_REQUESTS)
def test_contract_validation_names_field_and_range(body, status, field, message):
    with pytest.raises(ContractError) as info:
        parse_request(json.dumps(body) if isinstance(body, dict) else body, max_rows=3)
    assert (info.value.status, info.value.field) == (status, field)
    assert message in info.value.message


@pytest.mark.parametrize("name", sorted(HOSTILE_BODIES))
def test_hostile_json_is_a_400_naming_the_problem(name):
    body, field, message = HOSTILE_BODIES[name]
    with pytest.raises(ContractError) as info:
        parse_request(body)
    assert (info.value.status, info.value.field) == (400, field)
    assert message in info.value.message


def test_whole_number_floats_and_boundaries_still_accepted():
    request = parse_request(with_steps("150.0"))
    assert request.parameters["num_inference_steps"] == 150
    assert isinstance(request.parameters["num_inference_steps"], int)
    assert parse_request('{"input_data": {"data": ["a"], "parameters": {"seed": 4294967295}}}').parameters["seed"]


def test_a_request_takes_every_seed_generate_takes():
    """The contract capped seeds at 2**32 - 1, below the library's range, which Azure's contract does not limit."""
    for seed in (2**32, MAX_SEED):
        assert parse_request({"input_data": {"data": ["a"], "parameters": {"seed": seed}}}).parameters["seed"] == seed
    with pytest.raises(ContractError, match=f"must be between 0 and {MAX_SEED}; got {MAX_SEED + 1}"):
        parse_request(json.dumps({"input_data": {"data": ["a"], "parameters": {"seed": MAX_SEED + 1}}}))


def test_both_data_layouts():
    rows = parse_request({"input_data": {"columns": ["id", "prompt"], "data": [[1, "a fox"], [2, "a cat"]]}})
    flat = parse_request({"input_data": {"data": ["a fox", "a cat"], "index": ["x", "y"]}})
    assert rows.prompts == flat.prompts == ["a fox", "a cat"]
    assert flat.index == ["x", "y"] and rows.index == [0, 1]


@pytest.mark.parametrize(
    "header, key",
    [
        ("Bearer k1", "k1"),
        ("bearer k1", "k1"),
        ("BEARER  k1 ", "k1"),
        ("Basic k1", None),
        ("k1", None),
        ("Bearer", None),
        ("", None),
    ],
)
def test_bearer_scheme_is_case_insensitive(header, key):
    assert bearer_key({"authorization": header}) == key


def _body(prompts, steps, **extra):
    return json.dumps({"input_data": {"data": prompts, "parameters": {"num_inference_steps": steps, **extra}}})


def test_concurrent_requests_equal_the_same_requests_made_alone(tiny_deci):
    """Issue 14: 4 concurrent requests on one shared scheduler answered 500 (IndexError) or wrong images."""
    service = ScoringService(tiny_deci, EndpointSettings(max_concurrent_requests_per_instance=4))
    bodies = [_body(["a fox"], 3), _body(["an owl", "a cat"], 7), _body(["a dog"], 12), _body(["a ship"], 5, seed=9)]
    alone = [service.handle(body)[1] for body in bodies]
    together: list = [None] * len(bodies)

    def call(number):
        together[number] = service.handle(bodies[number])

    threads = [threading.Thread(target=call, args=(n,)) for n in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [status for status, _, _ in together] == [200] * len(bodies)
    for single, (_, rows, _) in zip(alone, together, strict=True):
        assert [r["generated_image"] for r in rows] == [r["generated_image"] for r in single]  # PNG bytes


def test_a_request_past_request_timeout_gets_408_and_its_generation_stops(tiny_deci):
    service = ScoringService(tiny_deci, EndpointSettings(request_timeout_ms=300))
    steps_run = []
    unet_forward = tiny_deci.unet.forward

    def counting_forward(*args, **kwargs):
        steps_run.append(1)
        return unet_forward(*args, **kwargs)

    tiny_deci.unet.forward = counting_forward
    try:
        status, body, _ = service.handle(_body(["a fox"], 150))
    finally:
        del tiny_deci.unet.forward
    assert status == 408 and "request_timeout_ms=300" in body["error"]["message"]
    assert len(steps_run) < 150, "the generation ran to the end instead of stopping at the deadline"
    with service.pool.view(timeout_s=0.1) as view:  # the stopped request gave its view back
        assert view is tiny_deci
    status, rows, _ = ScoringService(tiny_deci).handle(_body(["a fox"], 1))
    assert status == 200 and np.asarray(decode_image(rows[0]["generated_image"])).std() > 0


def test_each_model_is_asked_for_the_image_sides_it_can_take(tiny_deci, tiny_sd):
    """DeciDiffusion's UNet halves the latents 3 times and cannot pad: 72 px was a 422 (or 424 behind the
    rehearsed gateway, "model error"); it is a 400 naming the multiple, before any generation."""
    assert (size_multiple(tiny_deci), size_multiple(tiny_sd)) == (64, 8)
    status, body, _ = ScoringService(tiny_deci).handle(_body(["a fox"], 1, height=72, width=64))
    assert status == 400 and body["error"]["field"] == "input_data.parameters.height"
    assert "multiple of 64 for this model" in body["error"]["message"]
    with pytest.raises(ContractError, match="multiple of 8 for this model"):
        parse_request(_body(["a fox"], 1, width=100), size_multiple=size_multiple(tiny_sd))
    assert parse_request(_body(["a fox"], 1, width=72), size_multiple=8).parameters["width"] == 72


def test_a_side_given_alone_gives_an_image_of_that_side(tiny_deci):
    """diffusers falls back to the default size unless both sides are given; the endpoint passes what it gets to
    generate(), which fills the other side from the model's default (64 px for the tiny stand-in)."""
    status, rows, _ = ScoringService(tiny_deci).handle(_body(["a fox"], 1, height=128))
    assert status == 200
    assert decode_image(rows[0]["generated_image"]).size == (64, 128)  # PIL: (width, height)
