"""Stage profile of one pipeline call: set-up, denoising loop and decode told apart by the step callbacks."""

import pytest

from nbhelpers.perf.stages import profile_stages


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakePipeline:
    """Spends set-up, per-step and decode time on a fake clock, calling the step callback as diffusers does."""

    def __init__(self, clock: FakeClock, *, setup: float, steps: list[float], decode: float) -> None:
        self.clock, self.setup, self.steps, self.decode = clock, setup, steps, decode
        self.received: dict = {}

    def __call__(self, prompt, *, callback_on_step_end, **kwargs):
        self.received = {"prompt": prompt, **kwargs}
        self.clock.now += self.setup
        for index, seconds in enumerate(self.steps):
            self.clock.now += seconds
            callback_on_step_end(self, index, 999 - index, {"latents": None})
        self.clock.now += self.decode
        return "images"


def test_time_is_attributed_to_set_up_loop_and_decode():
    clock = FakeClock()
    pipe = FakePipeline(clock, setup=0.3, steps=[0.05] * 10, decode=0.2)
    stages = profile_stages(pipe, "an owl", clock=clock, num_inference_steps=10, output_type="np")
    assert stages.loop_iterations == 10
    assert stages.before_loop_s == pytest.approx(0.3)
    assert stages.loop_s == pytest.approx(0.5)
    assert stages.after_loop_s == pytest.approx(0.2)
    assert stages.total_s == pytest.approx(1.0)
    assert stages.shares() == pytest.approx({"before_loop": 0.3, "loop": 0.5, "after_loop": 0.2})
    assert stages.as_dict()["shares"]["loop"] == pytest.approx(0.5)
    assert pipe.received == {"prompt": "an owl", "num_inference_steps": 10, "output_type": "np"}


def test_a_fast_first_step_never_makes_the_set_up_negative():
    clock = FakeClock()
    stages = profile_stages(FakePipeline(clock, setup=0.0, steps=[0.01, 0.05, 0.05], decode=0.1), "owl", clock=clock)
    assert stages.before_loop_s == 0.0
    assert stages.loop_s == pytest.approx(0.11)
    assert stages.total_s == pytest.approx(0.21)


def test_one_step_cannot_be_profiled():
    clock = FakeClock()
    with pytest.raises(ValueError, match="at least 2 denoising steps"):
        profile_stages(FakePipeline(clock, setup=0.1, steps=[0.1], decode=0.1), "an owl", clock=clock)
