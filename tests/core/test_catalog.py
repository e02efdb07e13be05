import pytest

from nbhelpers.catalog import (
    CATALOG,
    UnknownModelError,
    catalog_table,
    find_spec,
    get_spec,
    known_model_names,
)


def test_catalog_has_the_four_models_with_published_defaults():
    assert known_model_names() == ["sd-v1-4", "sd-v1-5", "deci-v1", "small-sd-v0"]
    deci = get_spec("deci-v1")
    assert deci.hub_id == "Deci/DeciDiffusion-v1-0"
    assert deci.unet_subfolder == "flexible_unet"
    assert deci.generation_defaults() == {"num_inference_steps": 30, "guidance_scale": 7.5, "guidance_rescale": 0.7}
    assert deci.scheduler_config["prediction_type"] == "v_prediction"
    assert deci.scheduler_config["rescale_betas_zero_snr"] is True
    assert deci.scheduler_config["timestep_spacing"] == "trailing"
    sd = get_spec("sd-v1-4")
    assert sd.generation_defaults() == {"num_inference_steps": 50, "guidance_scale": 7.5}
    assert sd.unet_subfolder == "unet"
    assert get_spec("small-sd-v0").hub_id == "OFA-Sys/small-stable-diffusion-v0"


@pytest.mark.parametrize(
    "name, expected",
    [
        ("runwayml/stable-diffusion-v1-5", "sd-v1-5"),
        ("stable-diffusion-v1-5/stable-diffusion-v1-5", "sd-v1-5"),
        ("Deci/DeciDiffusion-v1-0", "deci-v1"),
        ("  DECI-V1 ", "deci-v1"),
        ("CompVis/stable-diffusion-v1-4", "sd-v1-4"),
        # The seed tutorial writes the small-sd id with a trailing slash.
        ("OFA-Sys/small-stable-diffusion-v0/", "small-sd-v0"),
        (" ofa-sys/small-stable-diffusion-v0// ", "small-sd-v0"),
    ],
)
def test_aliases_and_hub_ids_resolve(name, expected):
    assert get_spec(name).name == expected


def test_unknown_name_lists_known_models():
    with pytest.raises(UnknownModelError) as info:
        get_spec("sd-v9")
    message = str(info.value)
    assert "sd-v9" in message
    for name in CATALOG:
        assert name in message
    assert find_spec("sd-v9") is None


def test_catalog_table_rows():
    rows = catalog_table()
    assert [row["name"] for row in rows] == known_model_names()
    assert rows[2]["UNet params (M)"] == 814.7


@pytest.mark.parametrize("name", list(CATALOG))
def test_catalog_entry_chooses_pipeline_scheduler_and_unet(name):
    """The catalog entry alone decides the classes (loading, tiny and random-weight builds ask here)."""
    from nbhelpers.models.components import build_scheduler, pipeline_class, unet_config
    from nbhelpers.models.deci_pipeline import DeciDiffusionPipeline

    spec = CATALOG[name]
    assert pipeline_class(spec).__name__ == spec.pipeline_class
    assert (pipeline_class(spec) is DeciDiffusionPipeline) == (spec.unet_kind == "flexible")
    scheduler = build_scheduler(spec)
    assert type(scheduler).__name__ == spec.scheduler_class
    assert scheduler.config.prediction_type == spec.scheduler_config["prediction_type"]
    config = unet_config(spec)
    if spec.unet_kind == "unet2d":
        assert config["layers_per_block"] == spec.layers_per_block == (1 if name == "small-sd-v0" else 2)
        assert unet_config(spec, tiny=True)["layers_per_block"] == spec.layers_per_block
    else:
        assert "configurations" in config and not any(key.startswith("_") for key in config)
