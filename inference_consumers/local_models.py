"""The models chatbus can make offline, by name, and where ``make model`` puts them.

- ``smollm2-135m-instruct``: SmolLM2-135M-Instruct (real, Apache-2.0), the default
  (:mod:`.smollm2_model`);
- ``chatbus-tiny``: 6 M random weights that talk nonsense, for fast tests (:mod:`.demo_model`).

Any other name is a model someone brings: ``CHATBUS_MODEL_PATH`` names its Hugging Face folder.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from chatbus.errors import ConfigurationError
from chatbus.settings import Settings

__all__ = ["DEFAULT_MODEL", "LOCAL_MODELS", "TINY_MODEL", "build_model", "model_names_to_build"]

DEFAULT_MODEL = "smollm2-135m-instruct"
TINY_MODEL = "chatbus-tiny"
LOCAL_MODELS = (DEFAULT_MODEL, TINY_MODEL)


def _builder(name: str, settings: Settings) -> Callable[[Path, bool, bool], Path]:
    if name == DEFAULT_MODEL:
        from inference_consumers.smollm2_model import build_smollm2

        downloads = settings.cache_dir / "downloads"
        return lambda path, progress, force: build_smollm2(
            path, downloads=downloads, progress=progress, force=force
        )
    if name == TINY_MODEL:
        from inference_consumers.demo_model import build_demo_model

        return lambda path, progress, force: build_demo_model(path, progress=progress, force=force)
    raise ConfigurationError(
        f"chatbus cannot build a model called {name!r}: it builds {', '.join(LOCAL_MODELS)}. "
        "For any other model, set CHATBUS_MODEL_PATH to its Hugging Face folder."
    )


def build_model(
    settings: Settings, name: str, *, progress: bool = True, force: bool = False
) -> Path:
    """Build ``name`` into its folder (a no-op when it is there) and return the folder."""
    return _builder(name, settings)(settings.model_folder(name), progress, force)


def model_names_to_build(settings: Settings) -> list[str]:
    """What ``make model`` builds: every local model this checkout runs or tests with, except
    one that ``CHATBUS_MODEL_PATH`` already points at."""
    names = [*settings.local_model_names, *LOCAL_MODELS]
    wanted = [
        n
        for n in dict.fromkeys(names)
        if not (n == settings.model.name and settings.model.path is not None)
    ]
    unknown = [n for n in wanted if n not in LOCAL_MODELS]
    if unknown:
        raise ConfigurationError(
            f"no folder for model(s) {', '.join(unknown)}: chatbus builds only "
            f"{', '.join(LOCAL_MODELS)}; set CHATBUS_MODEL_PATH for the model you bring"
        )
    return wanted
