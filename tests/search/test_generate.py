"""The generator interface: registry, factory, and the one place prompts are checked."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from PIL import Image

from search.errors import (
    GeneratorUnavailableError,
    InvalidInputError,
    InvalidPromptError,
    UnknownGeneratorError,
)
from search.models.generator import (
    _BACKENDS,
    MAX_PROMPT_CHARS,
    MAX_PROMPTS,
    ImageGenerator,
    available_generators,
    check_prompts,
    load_generator,
    register_generator,
)


class SolidGenerator(ImageGenerator):
    """A colour drawn from the seed: enough to test the base class's contract."""

    name = "solid"
    native_size = 24
    size_multiple = 4

    def __init__(self) -> None:
        self.model_id = "solid-v1"
        self.calls: list[tuple[list[str], int, int]] = []

    def _generate(self, prompts: list[str], seed: int, size: int) -> list[Image.Image]:
        self.calls.append((prompts, seed, size))
        colour = tuple(torch.randint(0, 256, (3,), generator=torch.Generator()
                                     .manual_seed(seed)).tolist())
        return [Image.new("RGBA", (size, size), colour) for _ in prompts]


@pytest.fixture
def solid() -> Iterator[SolidGenerator]:
    generator = SolidGenerator()
    register_generator("solid", lambda model, device, offline: generator)
    yield generator
    _BACKENDS.pop("solid")


def test_both_backends_are_registered() -> None:
    assert {"house", "diffusers"} <= set(available_generators())


def test_unknown_backend_is_a_typed_input_error_naming_the_known_ones() -> None:
    with pytest.raises(UnknownGeneratorError, match="'dall-e-9'.*diffusers.*house") as caught:
        load_generator("dall-e-9")
    assert isinstance(caught.value, InvalidInputError)


def test_registered_backend_is_loaded_by_name(solid: SolidGenerator) -> None:
    assert load_generator("solid", device="cpu") is solid
    images = solid.generate(["a red apple", "  a shoe  "], seed=3)
    assert [image.size for image in images] == [(24, 24), (24, 24)]
    assert all(image.mode == "RGB" for image in images)  # the base class converts
    assert solid.calls == [(["a red apple", "a shoe"], 3, 24)]  # stripped, checked once


def test_size_is_checked_against_the_backend_multiple(solid: SolidGenerator) -> None:
    assert solid.generate(["x"], size=32)[0].size == (32, 32)
    for bad in (30, 8, 4096, 32.0, True):
        with pytest.raises(InvalidInputError, match="size"):
            solid.generate(["x"], size=bad)


@pytest.mark.parametrize("seed", [-1, 2**63, 1.5, "7", None])
def test_bad_seeds_are_refused(solid: SolidGenerator, seed: object) -> None:
    with pytest.raises(InvalidInputError, match="seed"):
        solid.generate(["x"], seed=seed)  # type: ignore[arg-type]


@pytest.mark.parametrize(("prompts", "problem"), [
    ([""], "prompt 0 is empty"),
    (["ok", "   \n"], "prompt 1 is empty"),
    (["x" * (MAX_PROMPT_CHARS + 1)], f"limit is {MAX_PROMPT_CHARS}"),
    ([None], "prompt 0 is NoneType"),
    ("a bare string", "not one string"),
    (["x"] * (MAX_PROMPTS + 1), f"limit is {MAX_PROMPTS}"),
])
def test_bad_prompts_are_typed_errors_naming_the_problem(solid: SolidGenerator,
                                                         prompts: object, problem: str) -> None:
    with pytest.raises(InvalidPromptError, match=problem):
        solid.generate(prompts)  # type: ignore[arg-type]
    assert solid.calls == []  # refused before any model work


def test_longest_allowed_prompt_passes() -> None:
    assert check_prompts(["x" * MAX_PROMPT_CHARS]) == ["x" * MAX_PROMPT_CHARS]


def test_no_prompts_is_no_images(solid: SolidGenerator) -> None:
    assert solid.generate([]) == []
    assert solid.calls == []


def test_same_seed_same_image(solid: SolidGenerator) -> None:
    first, again = solid.generate(["x"], seed=5)[0], solid.generate(["x"], seed=5)[0]
    assert first.tobytes() == again.tobytes()
    assert solid.generate(["x"], seed=6)[0].tobytes() != first.tobytes()


def test_missing_house_weights_name_the_file_and_the_fix(tmp_path) -> None:
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(GeneratorUnavailableError, match="nope.safetensors"):
        load_generator("house", model=str(missing), device="cpu")


def test_shipped_house_weights_missing_says_how_to_train(monkeypatch, tmp_path) -> None:
    import search.models.generators.house as house

    monkeypatch.setattr(house, "shipped_weights_path", lambda: tmp_path / "absent.safetensors")
    with pytest.raises(GeneratorUnavailableError, match="indexer.house.generator_train"):
        load_generator("house", device="cpu")


def test_diffusers_without_the_extra_says_which_extra(monkeypatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "diffusers", None)  # import diffusers -> ImportError
    with pytest.raises(GeneratorUnavailableError, match=r"\[generate\]"):
        load_generator("diffusers", model="some/model", device="cpu")


def test_diffusers_without_a_model_is_refused() -> None:
    with pytest.raises(GeneratorUnavailableError, match="needs a model"):
        load_generator("diffusers", device="cpu")
