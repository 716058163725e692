"""``chatbus simulate --to pipeline``: simulated conversations through the live bus."""

from __future__ import annotations

from pathlib import Path

import pytest

from analytics.simulate.generator import Profile
from chatbus.cli.pipeline_sink import simulate_to_pipeline
from chatbus.settings import Settings
from inference_consumers.worker import InferenceWorker

pytestmark = [pytest.mark.integration, pytest.mark.model, pytest.mark.timeout(300)]


async def test_simulated_conversations_are_answered_by_a_real_worker(
    settings: Settings, worker: InferenceWorker, demo_model_path: Path
) -> None:
    profile = Profile(seed=4, conversations=3, users=3, p_cancel=0.0)
    result = await simulate_to_pipeline(profile, settings, max_tokens=8, timeout_s=120)
    assert result.failed == 0, result.errors
    assert result.requests >= 3
    assert result.answered + result.refused + len(result.errors) == result.requests
    assert result.answered >= 1
    assert set(result.finish_reasons) <= {"stop", "length", "error", "content_filter"}
