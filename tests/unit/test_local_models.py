"""Which models ``make model`` builds and where each model's folder is (pure, nothing built)."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatbus.errors import ConfigurationError
from chatbus.settings import Settings
from inference_consumers.local_models import DEFAULT_MODEL, TINY_MODEL, model_names_to_build


def test_the_real_model_is_the_default_and_both_local_models_are_built(tmp_path: Path) -> None:
    settings = Settings(cache_dir=tmp_path)
    assert settings.model.name == DEFAULT_MODEL
    assert settings.resolved_model_path == tmp_path / "models" / DEFAULT_MODEL
    assert model_names_to_build(settings) == [DEFAULT_MODEL, TINY_MODEL]


def test_a_model_path_someone_brings_is_not_built_but_the_test_model_is(tmp_path: Path) -> None:
    settings = Settings(cache_dir=tmp_path, model_name="my-model", model_path=tmp_path / "mine")
    assert settings.resolved_model_path == tmp_path / "mine"
    assert settings.model_folder(TINY_MODEL) == tmp_path / "models" / TINY_MODEL
    assert model_names_to_build(settings) == [DEFAULT_MODEL, TINY_MODEL]


def test_a_local_model_chatbus_cannot_build_is_named(tmp_path: Path) -> None:
    settings = Settings(cache_dir=tmp_path, local_models=(DEFAULT_MODEL, "llama-70b"))
    with pytest.raises(ConfigurationError, match=r"llama-70b.*CHATBUS_MODEL_PATH"):
        model_names_to_build(settings)


def test_the_gateway_serves_the_local_models_unless_told_otherwise() -> None:
    both = Settings(local_models=(DEFAULT_MODEL, TINY_MODEL))
    assert both.served_models == (DEFAULT_MODEL, TINY_MODEL)
    assert both.replace(**{"gateway_models": ("x",)}).served_models == ("x",)
    assert Settings(model_name=TINY_MODEL).served_models == (TINY_MODEL,)
