"""Request bodies shared by the endpoint tests: invalid ones and hostile ones (each must get a 4xx)."""

BAD_REQUESTS = [
    ("{not json", 400, "body", "not valid JSON"),
    ({"data": ["x"]}, 400, "input_data", "is required"),
    ({"input_data": {"data": []}}, 400, "input_data.data", "non-empty list"),
    ({"input_data": {"data": ["a", "b"], "index": [0]}}, 400, "input_data.index", "one label per row (2)"),
    ({"input_data": {"data": ["ok", 7]}}, 400, "input_data.data[1]", "non-empty prompt string"),
    ({"input_data": {"data": ["  "]}}, 400, "input_data.data[0]", "non-empty prompt string"),
    ({"input_data": {"data": ["a", "b", "c", "d"]}}, 413, "input_data.data", "at most 3 per request"),
    (
        {"input_data": {"data": ["a"], "parameters": {"num_inference_steps": 0}}},
        400,
        "input_data.parameters.num_inference_steps",
        "between 1 and 150",
    ),
    (
        {"input_data": {"data": ["a"], "parameters": {"guidance_scale": 99}}},
        400,
        "input_data.parameters.guidance_scale",
        "between 0.0 and 30.0",
    ),
    (
        {"input_data": {"data": ["a"], "parameters": {"height": 100}}},
        400,
        "input_data.parameters.height",
        "must be a multiple of",  # 8 for SD, 64 for DeciDiffusion (test_endpoints_contract checks which)
    ),
    (
        {"input_data": {"data": ["a"], "parameters": {"negative_prompt": "blurry " * 300}}},
        400,
        "input_data.parameters.negative_prompt",
        "at most 2000",
    ),
    (
        {"input_data": {"data": ["a"], "parameters": {"sampler": "euler"}}},
        400,
        "input_data.parameters",
        "unknown ['sampler']",
    ),
    ({"input_data": {"columns": ["text"], "data": ["a"]}}, 400, "input_data.columns", 'contains "prompt"'),
]


def with_steps(value: str) -> str:
    return '{"input_data": {"data": ["a fox"], "parameters": {"num_inference_steps": ' + value + "}}}"


#: Bodies that answered 500 before (issue 14): each must be a 400 naming what is wrong.
HOSTILE_BODIES = {
    "infinity": (with_steps("Infinity"), "body", "Infinity"),
    "nan": (with_steps("NaN"), "body", "NaN"),
    "float_overflow": (with_steps("1e400"), "body", "too large for a float"),
    "int_400_digits": (with_steps("9" * 400), "body", "400 digits"),
    "seed_400_digits": (
        '{"input_data": {"data": ["a"], "parameters": {"seed": ' + "1" * 400 + "}}}",
        "body",
        "400 digits",
    ),
    "nested_100000_deep": (
        '{"input_data": {"data": ["a"], "index": [' + "[" * 100_000 + "]" * 100_000 + "]}}",
        "body",
        "nested too deeply",
    ),
    "lone_surrogate_prompt": ('{"input_data": {"data": ["a \\ud800 fox"]}}', "input_data.data[0]", "surrogate"),
    "lone_surrogate_negative": (
        '{"input_data": {"data": ["a"], "parameters": {"negative_prompt": "\\udfff"}}}',
        "input_data.parameters.negative_prompt",
        "surrogate",
    ),
}
