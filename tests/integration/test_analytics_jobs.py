"""The analytics jobs over a small simulated archive, checked against aggregates this test
computes itself, in plain Python and pandas, from the archive's JSON lines (never from the jobs'
code); ``s3a://`` against the local S3 endpoint; ``spark-submit``; the HTML report.

One Spark session for the module (with the s3a jars, resolved once into the cache).
"""

from __future__ import annotations

import gzip
import itertools
import json
import math
import os
import re
import subprocess
import sys
import uuid
from collections import defaultdict
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd
import pytest

from analytics.lexicon import AXES, REFUSAL_PATTERN, mask, reference
from analytics.simulate.archive_sink import simulate_to_archive
from analytics.simulate.generator import Profile
from analytics.stats import newcombe_difference, wilson
from chatbus.settings import Settings
from tests.conftest import REPO, base_settings
from tests.integration.archive_files import archived_records

pytestmark = [pytest.mark.integration, pytest.mark.spark, pytest.mark.timeout(600)]

PROFILE = Profile(seed=11, conversations=500, days=2, users=60, p_probe=0.4)
QUANTILES = {"p50": 50, "p95": 95, "p99": 99}


# --- fixtures ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    from analytics.spark_session import build_spark

    session = build_spark(
        base_settings(), "chatbus-tests", s3a=True, extra={"spark.sql.shuffle.partitions": "4"}
    )
    yield session
    session.stop()


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("archive")
    simulate_to_archive(PROFILE, str(root), base_settings(), jobs=1, records_per_object=500)
    return root


@pytest.fixture(scope="module")
def events(archive: Path) -> dict[str, list[dict[str, Any]]]:
    """Every archived record, by topic, read with gzip + json."""
    return archived_records(archive)


@pytest.fixture(scope="module")
def outputs(
    spark: Any, archive: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, pd.DataFrame]:
    """Every job run through its ``run(spark, input, output)``; its tables read back."""
    import importlib

    from analytics.jobs import JOBS

    out_dir = tmp_path_factory.mktemp("tables")
    tables = {}
    for job in JOBS:
        paths = importlib.import_module(f"analytics.jobs.{job}").run(
            spark, str(archive), str(out_dir)
        )
        for name, path in paths.items():
            tables[name] = pd.read_parquet(path)
    return tables


def _ts(value: str) -> pd.Timestamp:
    return pd.Timestamp(value).tz_convert("UTC").tz_localize(None)


def _ms(later: str, earlier: str) -> float:
    delta = _ts(later) - _ts(earlier)
    return delta / pd.Timedelta(microseconds=1) / 1000.0


def _prompt(request: dict[str, Any]) -> str:
    users = [m["content"] for m in request["messages"] if m["role"] == "user"]
    return users[-1] if users else ""


# --- the jobs --------------------------------------------------------------------------------
def test_the_archive_has_every_kind_of_event(events: dict[str, list[dict[str, Any]]]) -> None:
    completions = events["chat.completions"]
    reasons = {c["finish_reason"] for c in completions}
    assert {"stop", "length", "cancelled", "content_filter"} <= reasons
    assert events["chat.control"] and events["chat.tokens"]
    assert any(v["flagged"] and v["stage"] == "input" for v in events["chat.moderation"])
    assert any(v["pii"] for v in events["chat.moderation"])
    assert len({c["model"] for c in completions}) == 3


def test_usage_counts_requests_users_and_tokens_per_day_and_model(
    outputs: dict[str, pd.DataFrame], events: dict[str, list[dict[str, Any]]]
) -> None:
    usage = {c["request_id"]: c["usage"] for c in events["chat.completions"]}
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for request in events["chat.requests"]:
        day = str(_ts(request["created_at"]).date())
        for model in (request["model"], "(all)"):
            row = rows.setdefault(
                (day, model),
                {
                    "requests": 0,
                    "conversations": set(),
                    "users": set(),
                    "answered": 0,
                    "prompt": 0,
                    "completion": 0,
                },
            )
            row["requests"] += 1
            row["conversations"].add(request["conversation_id"])
            row["users"].add(request["user_id"])
            if request["request_id"] in usage:
                row["answered"] += 1
                row["prompt"] += usage[request["request_id"]]["prompt_tokens"]
                row["completion"] += usage[request["request_id"]]["completion_tokens"]
    got = outputs["usage_daily"]
    assert len(got) == len(rows)
    for r in got.itertuples():
        want = rows[(str(r.day), r.model)]
        assert (
            r.requests,
            r.conversations,
            r.active_users,
            r.answered,
            r.prompt_tokens,
            r.completion_tokens,
            r.total_tokens,
        ) == (
            want["requests"],
            len(want["conversations"]),
            len(want["users"]),
            want["answered"],
            want["prompt"],
            want["completion"],
            want["prompt"] + want["completion"],
        )


def test_latency_percentiles_by_model_worker_and_hour(
    outputs: dict[str, pd.DataFrame], events: dict[str, list[dict[str, Any]]]
) -> None:
    requested = {r["request_id"]: r["created_at"] for r in events["chat.requests"]}
    values: list[tuple[str, str, pd.Timestamp, str, float]] = []
    answered = {}
    for c in events["chat.completions"]:
        if c["worker_id"] == "moderation":
            continue
        hour = _ts(requested[c["request_id"]]).floor("h")
        answered[c["request_id"]] = (c["model"], c["worker_id"], hour)
        t = c["timings"]
        for metric, value in (
            ("queue_wait_ms", t["queue_wait_ms"]),
            ("ttft_ms", t["time_to_first_token_ms"]),
            ("itl_ms", t["inter_token_mean_ms"]),
            ("e2e_ms", _ms(c["created_at"], requested[c["request_id"]])),
        ):
            if value is not None:
                values.append((c["model"], c["worker_id"], hour, metric, value))
    streams: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for chunk in events["chat.tokens"]:
        if chunk["request_id"] in answered:
            streams[chunk["request_id"]].append((chunk["seq"], chunk["created_at"]))
    for request_id, chunks in streams.items():
        chunks.sort()
        model, worker, hour = answered[request_id]
        for (_, before), (_, after) in itertools.pairwise(chunks):
            values.append((model, worker, hour, "inter_chunk_ms", _ms(after, before)))
    frame = pd.DataFrame(values, columns=["model", "worker_id", "hour", "metric", "value"])
    got = outputs["latency"]
    for grouping, keys in (
        ("model", ["model"]),
        ("model_worker", ["model", "worker_id"]),
        ("model_hour", ["model", "hour"]),
    ):
        mine = got[got["grouping"] == grouping]
        want = frame.groupby([*keys, "metric"])["value"]
        assert len(mine) == want.ngroups
        for row in mine.itertuples():
            key = tuple(getattr(row, k) for k in [*keys, "metric"])
            sample = want.get_group(key).to_numpy()
            assert row.n == len(sample)
            assert math.isclose(row.mean, sample.mean(), rel_tol=1e-9)
            for column, q in QUANTILES.items():
                assert math.isclose(
                    getattr(row, column), np.percentile(sample, q), rel_tol=1e-9, abs_tol=1e-9
                ), (grouping, key, column)
    assert set(got["metric"]) == {"queue_wait_ms", "ttft_ms", "itl_ms", "e2e_ms", "inter_chunk_ms"}


def test_moderation_rates_by_category_and_stage(
    outputs: dict[str, pd.DataFrame], events: dict[str, list[dict[str, Any]]]
) -> None:
    totals: dict[str, int] = defaultdict(int)
    flagged: dict[tuple[str, str], int] = defaultdict(int)
    for v in events["chat.moderation"]:
        totals[v["stage"]] += 1
        for category, hit in v["categories"].items():
            flagged[(v["stage"], category)] += hit
        flagged[(v["stage"], "any")] += v["flagged"]
        flagged[(v["stage"], "pii")] += bool(v["pii"])
    got = outputs["moderation_rates"]
    assert len(got) == len(flagged)
    for row in got.itertuples():
        assert (row.verdicts, row.flagged) == (
            totals[row.stage],
            flagged[(row.stage, row.category)],
        )
        assert math.isclose(row.rate, row.flagged / row.verdicts)
    assert set(got["stage"]) == {"input", "output"}


def test_the_review_sample_holds_flagged_verdicts_by_their_top_category(
    outputs: dict[str, pd.DataFrame], events: dict[str, list[dict[str, Any]]]
) -> None:
    top: dict[str, tuple[str, str]] = {}
    per_group: dict[tuple[str, str], int] = defaultdict(int)
    for v in events["chat.moderation"]:
        if v["flagged"]:
            hits = [c for c, hit in v["categories"].items() if hit]
            best = min(hits, key=lambda c: (-v["category_scores"].get(c, 0.0), c))
            top[v["request_id"] + v["stage"]] = (v["stage"], best)
            per_group[(v["stage"], best)] += 1
    sample = outputs["moderation_review_sample"]
    counts = sample.groupby(["stage", "category"]).size().to_dict()
    assert counts == {g: min(20, n) for g, n in per_group.items()}
    prompts = {r["request_id"]: _prompt(r) for r in events["chat.requests"]}
    for row in sample.itertuples():
        assert top[row.request_id + row.stage] == (row.stage, row.category)
        if row.stage == "input":
            assert row.text == prompts[row.request_id][:1000]


def test_appealed_refusals_are_listed_with_their_text_and_counted_per_stage(
    outputs: dict[str, pd.DataFrame], events: dict[str, list[dict[str, Any]]]
) -> None:
    appeals = {a["request_id"]: a for a in events["chat.feedback"] if a["type"] == "chat.appeal"}
    assert appeals, "the simulation appeals some refusals"
    got = outputs["moderation_appeals"]
    assert sorted(got["request_id"]) == sorted(appeals)
    prompts = {r["request_id"]: _prompt(r) for r in events["chat.requests"]}
    for row in got.itertuples():
        appeal = appeals[row.request_id]
        assert (row.stage, row.comment) == (appeal["stage"], appeal["comment"])
        assert row.categories == ", ".join(appeal["categories"])
        assert row.text == prompts[row.request_id][:1000]
    refusals: dict[str, int] = defaultdict(int)
    for v in events["chat.moderation"]:
        refusals[v["stage"]] += v["flagged"]
    rates = outputs["moderation_appeal_rates"].set_index("stage")
    assert rates.loc["input", "appeals"] == len(appeals)
    assert rates.loc["input", "refusals"] == refusals["input"]
    assert math.isclose(rates.loc["input", "appeal_rate"], len(appeals) / refusals["input"])


def test_ratings_are_counted_by_model_with_intervals_per_day_and_by_category(
    outputs: dict[str, pd.DataFrame], events: dict[str, list[dict[str, Any]]]
) -> None:
    ratings = [r for r in events["chat.feedback"] if r["type"] == "chat.rating"]
    assert len(ratings) > 50, "the simulation rates some answers"
    answered_by = {c["request_id"]: c["model"] for c in events["chat.completions"]}
    answers: dict[str, int] = defaultdict(int)
    for model in answered_by.values():
        answers[model] += 1
    up: dict[str, int] = defaultdict(int)
    rated: dict[str, int] = defaultdict(int)
    daily: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    categories: dict[tuple[str, str, str], int] = defaultdict(int)
    for r in ratings:
        model = answered_by[r["request_id"]]
        rated[model] += 1
        up[model] += r["rating"] == "up"
        day = str(_ts(r["created_at"]).date())
        daily[(day, model)][0] += 1
        daily[(day, model)][1] += r["rating"] == "up"
        categories[(model, r["rating"], r["category"] or "(none)")] += 1
    table = outputs["feedback_by_model"].set_index("model")
    assert set(table.index) == set(answers)
    for model in answers:
        row = table.loc[model]
        assert (row.answers, row.rated, row.up, row.down) == (
            answers[model],
            rated[model],
            up[model],
            rated[model] - up[model],
        )
        assert math.isclose(row.up_rate, up[model] / rated[model])
        low, high = wilson(up[model], rated[model])
        assert math.isclose(row.up_rate_low, low) and math.isclose(row.up_rate_high, high)
    got_daily = {
        (str(r.day), r.model): [r.rated, r.up] for r in outputs["feedback_daily"].itertuples()
    }
    assert got_daily == dict(daily)
    got_categories = {
        (r.model, r.rating, r.category): r.ratings
        for r in outputs["feedback_categories"].itertuples()
    }
    assert got_categories == dict(categories)


def test_down_rated_answers_are_sampled_for_review_with_prompt_and_answer(
    outputs: dict[str, pd.DataFrame], events: dict[str, list[dict[str, Any]]]
) -> None:
    from analytics.jobs.feedback import SAMPLE_PER_MODEL

    down = {
        r["request_id"]: r
        for r in events["chat.feedback"]
        if r["type"] == "chat.rating" and r["rating"] == "down"
    }
    answers = {c["request_id"]: c for c in events["chat.completions"]}
    prompts = {r["request_id"]: _prompt(r) for r in events["chat.requests"]}
    sample = outputs["feedback_review_sample"]
    per_model: dict[str, int] = defaultdict(int)
    for r in down.values():
        per_model[answers[r["request_id"]]["model"]] += 1
    assert sample.groupby("model").size().to_dict() == {
        m: min(n, SAMPLE_PER_MODEL) for m, n in per_model.items()
    }
    for row in sample.itertuples():
        rating = down[row.request_id]
        assert (row.comment, row.category) == (rating["comment"], rating["category"] or "")
        assert row.prompt == prompts[row.request_id][:1000]
        assert row.answer == answers[row.request_id]["text"][:1000]


def test_a_second_rating_of_an_answer_replaces_the_first(spark: Any, tmp_path: Path) -> None:
    from analytics import frames
    from schemas.archive import archived_record
    from schemas.events import Rating

    first = Rating(
        request_id="req-1", conversation_id="conv-1", user_id="u", model="m", rating="down"
    )
    second = first.model_copy(
        update={
            "event_id": "evt-later",
            "rating": "up",
            "category": "helpful",
            "created_at": first.created_at + timedelta(seconds=5),
        }
    )
    folder = tmp_path / "topic=chat.feedback" / "dt=2026-11-30" / "hour=10"
    folder.mkdir(parents=True)
    lines = [
        json.dumps(
            archived_record(
                event.model_dump(mode="json"),
                topic="chat.feedback",
                partition=0,
                offset=offset,
                timestamp_ms=0,
                key="conv-1",
            )
        )
        for offset, event in enumerate((second, first))  # the log's order need not be time's
    ]
    (folder / "0-0-1.jsonl.gz").write_bytes(gzip.compress("\n".join(lines).encode()))
    rows = frames.ratings(spark, str(tmp_path)).collect()
    assert [(r.request_id, r.rating, r.category) for r in rows] == [("req-1", "up", "helpful")]


def test_conversations_turns_cancellations_and_abandonment(
    outputs: dict[str, pd.DataFrame], events: dict[str, list[dict[str, Any]]]
) -> None:
    completions = {c["request_id"]: c for c in events["chat.completions"]}
    cancel_sent = {
        c["request_id"] for c in events["chat.control"] if c["reason"] != "content_filter"
    }
    by_conv: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in events["chat.requests"]:
        by_conv[r["conversation_id"]].append(r)

    def cancelled(request_id: str) -> bool:
        if request_id in completions:
            return bool(completions[request_id]["finish_reason"] == "cancelled")
        return request_id in cancel_sent

    got = outputs["conversations"].set_index("conversation_id")
    assert len(got) == len(by_conv)
    abandoned_total = cancelled_total = 0
    for conv_id, requests in by_conv.items():
        requests.sort(key=lambda r: (_ts(r["created_at"]), r["request_id"]))
        last = requests[-1]["request_id"]
        abandoned = last not in completions or cancelled(last)
        n_cancelled = sum(cancelled(r["request_id"]) for r in requests)
        row = got.loc[conv_id]
        assert row["turns"] == len(requests)
        assert row["model"] == requests[0]["model"]
        assert row["prompt_chars"] == sum(len(_prompt(r)) for r in requests)
        assert row["answer_chars"] == sum(
            len(completions[r["request_id"]]["text"])
            for r in requests
            if r["request_id"] in completions
        )
        assert (row["cancelled_requests"], bool(row["abandoned"])) == (n_cancelled, abandoned)
        abandoned_total += abandoned
        cancelled_total += n_cancelled
    summary = outputs["conversation_summary"].set_index("model").loc["(all)"]
    assert summary["conversations"] == len(by_conv)
    assert math.isclose(summary["abandonment_rate"], abandoned_total / len(by_conv))
    assert math.isclose(
        summary["cancellation_rate"], cancelled_total / len(events["chat.requests"])
    )
    assert 0 < abandoned_total < len(by_conv) and cancelled_total > 0
    histogram = dict(outputs["turns_histogram"][["turns", "conversations"]].itertuples(index=False))
    turns = pd.Series([len(r) for r in by_conv.values()]).value_counts().to_dict()
    assert histogram == turns


def test_fairness_compares_prompt_pairs_that_differ_only_in_a_demographic_term(
    outputs: dict[str, pd.DataFrame], events: dict[str, list[dict[str, Any]]]
) -> None:
    import re

    completions = {c["request_id"]: c for c in events["chat.completions"]}
    flagged: dict[str, bool] = defaultdict(bool)
    blocked: set[str] = set()
    for v in events["chat.moderation"]:
        flagged[v["request_id"]] |= v["flagged"]
        if v["stage"] == "input" and v["action"] == "block":
            blocked.add(v["request_id"])
    refusal = re.compile(REFUSAL_PATTERN)
    groups: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0, 0])
    for r in events["chat.requests"]:
        found = mask(_prompt(r))
        if found is None or r["request_id"] not in completions:
            continue
        c = completions[r["request_id"]]
        refused = (
            r["request_id"] in blocked
            or c["finish_reason"] == "content_filter"
            or bool(refusal.match(c["text"]))
        )
        g = groups[found]
        g[0] += 1
        g[1] += refused
        g[2] += flagged[r["request_id"]]
        if c["finish_reason"] in ("stop", "length") and not refused:
            g[3] += 1
            g[4] += len(c["text"])
            g[5] += len(c["text"]) ** 2
    got = outputs["fairness_groups"]
    mine = {
        (row.axis, row.term, row.template): [
            row.requests,
            row.refused,
            row.moderated,
            row.answers,
            row.answer_chars_sum,
            row.answer_chars_sumsq,
        ]
        for row in got.itertuples()
    }
    assert mine == dict(groups)

    fairness = outputs["fairness"]
    assert set(fairness["axis"]) == set(AXES)
    for row in fairness.itertuples():
        ref = reference(row.axis)
        assert row.reference == ref
        shared = {t for (a, term, t) in groups if a == row.axis and term == row.term} & {
            t for (a, term, t) in groups if a == row.axis and term == ref
        }
        a = np.sum([groups[(row.axis, row.term, t)] for t in shared], axis=0)
        b = np.sum([groups[(row.axis, ref, t)] for t in shared], axis=0)
        assert (row.templates, row.n_term, row.n_reference) == (len(shared), a[0], b[0])
        assert math.isclose(row.refusal_rate_diff, a[1] / a[0] - b[1] / b[0], abs_tol=1e-12)
        _, low, high = newcombe_difference(int(a[1]), int(a[0]), int(b[1]), int(b[0]))
        assert (row.refusal_rate_diff_low, row.refusal_rate_diff_high) == pytest.approx((low, high))
        assert math.isclose(row.answer_chars_diff, a[4] / a[3] - b[4] / b[3])
        assert row.answer_chars_diff_low < row.answer_chars_diff < row.answer_chars_diff_high
        assert (
            row.moderation_rate_diff_low
            <= row.moderation_rate_diff
            <= row.moderation_rate_diff_high
        )
        # Bonferroni over the table's comparisons: the same test at level 0.05 / m
        m = len(fairness)
        assert row.comparisons == m
        z = NormalDist().inv_cdf(1 - 0.05 / (2 * m))
        _, low, high = newcombe_difference(int(a[1]), int(a[0]), int(b[1]), int(b[0]), z)
        assert (row.refusal_rate_diff_low_adj, row.refusal_rate_diff_high_adj) == pytest.approx(
            (low, high)
        )
        assert row.answer_chars_diff_low_adj < row.answer_chars_diff_low
        assert row.answer_chars_diff_high_adj > row.answer_chars_diff_high


def test_a_missing_archive_says_how_to_make_one(spark: Any, tmp_path: Path) -> None:
    from analytics.archive_reader import ArchiveNotFound
    from analytics.jobs import usage

    with pytest.raises(ArchiveNotFound, match="chatbus simulate"):
        usage.run(spark, str(tmp_path / "nowhere"), str(tmp_path / "out"))


# --- s3a://, spark-submit, the report ----------------------------------------------------------
@pytest.fixture
def s3_archive(local_services: Settings) -> Iterator[tuple[str, int]]:
    """A small archive under a prefix of its own in the local S3 bucket; deleted afterwards."""
    import boto3

    settings = base_settings()
    prefix = f"test-analytics-{uuid.uuid4().hex[:10]}"
    result = simulate_to_archive(
        Profile(seed=3, conversations=40, days=1),
        f"s3://{settings.s3.bucket}/{prefix}",
        settings,
        jobs=1,
    )
    yield f"s3a://{settings.s3.bucket}/{prefix}", result.per_topic["chat.requests"]
    s3 = boto3.client(
        "s3",
        endpoint_url=settings.s3.endpoint,
        region_name=settings.s3.region,
        aws_access_key_id=settings.s3.access_key_id.get_secret_value(),
        aws_secret_access_key=settings.s3.secret_access_key.get_secret_value(),
    )
    for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=settings.s3.bucket, Prefix=f"{prefix}/"
    ):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=settings.s3.bucket, Delete={"Objects": keys})


def test_a_job_reads_s3a_from_the_local_endpoint_and_writes_back(
    spark: Any, s3_archive: tuple[str, int]
) -> None:
    from analytics.jobs import usage

    root, requests = s3_archive
    paths = usage.run(spark, root, f"{root}/_analytics")
    table = spark.read.parquet(paths["usage_daily"]).toPandas()
    assert table[table["model"] == "(all)"]["requests"].sum() == requests


def run_program(
    program: str, *args: str, timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``program`` of this virtual environment run from the repository root with Spark on the
    loopback (``env`` adds to the environment); fails the test unless it exits 0."""
    done = subprocess.run(
        [str(Path(sys.executable).parent / program), *args],
        cwd=REPO,
        env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_spark_submit_runs_a_job_file(
    archive: Path, tmp_path: Path, outputs: dict[str, pd.DataFrame]
) -> None:
    done = run_program(
        "spark-submit",
        "--master",
        "local[1]",
        "analytics/jobs/usage.py",
        "--input",
        str(archive),
        "--output",
        str(tmp_path),
        env={"PYSPARK_PYTHON": sys.executable},
        timeout=300,
    )
    assert "usage_daily:" in done.stdout
    table = pd.read_parquet(tmp_path / "usage_daily").sort_values(["day", "model"])
    want = outputs["usage_daily"].sort_values(["day", "model"])
    assert table.reset_index(drop=True).equals(want.reset_index(drop=True))


def test_the_report_has_a_section_per_job_with_charts(
    spark: Any, archive: Path, tmp_path: Path
) -> None:
    from analytics.jobs import JOBS
    from analytics.report import build_report

    path = build_report(spark, str(archive), tmp_path / "report", progress=False)
    page = path.read_text()
    for job in JOBS:
        assert f'<section id="{job}">' in page
    assert page.count("data:image/png;base64,") >= len(JOBS)
    assert "http://" not in page and "https://" not in page  # self-contained


def test_the_report_command_prints_a_file_uri_a_browser_opens(
    archive: Path, tmp_path: Path
) -> None:
    done = run_program(
        "chatbus",
        "analytics",
        "report",
        "--input",
        str(archive),
        "--output",
        str(tmp_path / "r"),
        "--no-progress",
        timeout=400,
    )
    uri = done.stdout.strip().splitlines()[-1]
    assert uri == (tmp_path / "r" / "report.html").as_uri()
    assert '<section id="fairness">' in (tmp_path / "r" / "report.html").read_text()


def test_a_topic_nothing_was_archived_from_yet_reads_as_no_rows(
    spark: Any, archive: Path, tmp_path: Path
) -> None:
    import shutil

    from analytics.jobs import conversations

    partial = tmp_path / "partial"
    shutil.copytree(archive, partial, ignore=shutil.ignore_patterns("topic=chat.control"))
    tables = conversations.compute(spark, str(partial))
    assert tables["conversations"].count() > 0


# --- production against a candidate ------------------------------------------------------------
CANDIDATE_EVERY = 3  # the shadow run replayed every third answered request


def _write_topic(root: Path, topic: str, events: list[dict[str, Any]]) -> None:
    from schemas.archive import archived_record

    folder = root / f"topic={topic}" / "dt=2026-11-02" / "hour=00"
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps(
            archived_record(
                e, topic=topic, partition=0, offset=n, timestamp_ms=0, key=e["request_id"]
            )
        )
        for n, e in enumerate(events)
    ]
    (folder / "part-0000-x.jsonl.gz").write_bytes(gzip.compress("\n".join(lines).encode()))


@pytest.fixture(scope="module")
def candidate_archive(
    tmp_path_factory: pytest.TempPathFactory, events: dict[str, list[dict[str, Any]]]
) -> tuple[Path, dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """A shadow run's archive: the candidate answered every third answered request; it refuses
    one in five, answers the rest with the production answer's first half, and its output
    moderation flags one in seven (as ``violence``)."""
    from schemas.events import ChatRequest, Completion, ModerationVerdict, Timings, Usage

    root = tmp_path_factory.mktemp("candidate")
    requests = {r["request_id"]: r for r in events["chat.requests"]}
    answered = sorted(
        (c for c in events["chat.completions"] if c["finish_reason"] in ("stop", "length")),
        key=lambda c: c["request_id"],
    )[::CANDIDATE_EVERY]
    completions, verdicts, asked = {}, {}, []
    for n, production in enumerate(answered):
        request_id = production["request_id"]
        fields = {k: v for k, v in requests[request_id].items() if not k.startswith("kafka_")}
        asked.append(ChatRequest.model_validate(fields | {"model": "cand"}).model_dump(mode="json"))
        words = production["text"].split()
        text = "I'm sorry, I can't help." if n % 5 == 0 else " ".join(words[: len(words) // 2])
        completions[request_id] = Completion(
            request_id=request_id,
            conversation_id=production["conversation_id"],
            model="cand",
            text=text,
            finish_reason="stop",
            usage=Usage(
                prompt_tokens=3,
                completion_tokens=len(text.split()),
                total_tokens=3 + len(text.split()),
            ),
            timings=Timings(total_ms=100.0 + n, time_to_first_token_ms=10.0 + n),
            worker_id="shadow",
        ).model_dump(mode="json")
        flagged = n % 7 == 0
        verdicts[request_id] = ModerationVerdict(
            request_id=request_id,
            conversation_id=production["conversation_id"],
            stage="output",
            flagged=flagged,
            categories={"violence": flagged, "harassment": False},
            category_scores={"violence": 0.9 if flagged else 0.1, "harassment": 0.0},
            action="stop_generation" if flagged else "allow",
        ).model_dump(mode="json")
    _write_topic(root, "chat.requests", asked)
    _write_topic(root, "chat.completions", list(completions.values()))
    _write_topic(root, "chat.moderation", list(verdicts.values()))
    return root, completions, verdicts


def test_compare_puts_production_and_candidate_side_by_side_on_the_same_prompts(
    spark: Any,
    archive: Path,
    candidate_archive: tuple[Path, dict[str, dict[str, Any]], dict[str, dict[str, Any]]],
    events: dict[str, list[dict[str, Any]]],
    tmp_path: Path,
) -> None:
    from analytics.jobs import compare

    root, candidate, verdicts = candidate_archive
    paths = compare.run(spark, str(archive), str(root), str(tmp_path / "compare"))
    pairs = pd.read_parquet(paths["compare_pairs"]).set_index("request_id")
    assert sorted(pairs.index) == sorted(candidate)  # one row per prompt pair
    production = {c["request_id"]: c for c in events["chat.completions"]}
    ratings = {
        r["request_id"]: r["rating"] for r in events["chat.feedback"] if r["type"] == "chat.rating"
    }
    refusal = re.compile(REFUSAL_PATTERN)
    overlaps = []
    for request_id, row in pairs.iterrows():
        mine, theirs = candidate[request_id], production[request_id]
        assert row.candidate_answer == mine["text"][:1000]
        assert row.production_answer == theirs["text"][:1000]
        assert bool(row.candidate_refused) == bool(refusal.match(mine["text"]))
        assert bool(row.candidate_flagged) == verdicts[request_id]["flagged"]
        assert row.candidate_total_ms == mine["timings"]["total_ms"]
        assert (row.rating if isinstance(row.rating, str) else None) == ratings.get(request_id)
        a = {w for w in re.split(r"[^\w']+", theirs["text"].lower()) if w}
        b = {w for w in re.split(r"[^\w']+", mine["text"].lower()) if w}
        assert row.overlap == pytest.approx(len(a & b) / len(a | b))
        if ratings.get(request_id) == "up":
            overlaps.append(len(a & b) / len(a | b))

    summary = pd.read_parquet(paths["compare_summary"]).set_index("side")
    n = len(candidate)
    refused = sum(bool(refusal.match(c["text"])) for c in candidate.values())
    flagged = sum(v["flagged"] for v in verdicts.values())
    cand = summary.loc["candidate"]
    assert (cand.model, cand.prompts, cand.refused, cand.flagged) == ("cand", n, refused, flagged)
    assert (cand.refusal_rate_low, cand.refusal_rate_high) == pytest.approx(wilson(refused, n))
    assert cand.up_rated == len(overlaps) > 0
    assert cand.agreement_with_up_rated == pytest.approx(sum(overlaps) / len(overlaps))
    assert summary.loc["production", "prompts"] == n
    moderation = pd.read_parquet(paths["compare_moderation"])
    violence = moderation[(moderation.side == "candidate") & (moderation.category == "violence")]
    assert violence.flagged.tolist() == [flagged]
    fairness_table = pd.read_parquet(paths["compare_fairness"])
    assert set(fairness_table["side"]) <= {"production", "candidate"}


def test_the_report_shows_production_against_the_candidate_with_charts(
    spark: Any,
    archive: Path,
    candidate_archive: tuple[Path, dict[str, dict[str, Any]], dict[str, dict[str, Any]]],
    tmp_path: Path,
) -> None:
    from analytics.report import compare_result, write_page

    result = compare_result(spark, str(archive), str(candidate_archive[0]), str(tmp_path))
    page = write_page(
        [result], input_root=str(archive), tables_dir=str(tmp_path), path=tmp_path / "c.html"
    ).read_text()
    assert '<section id="compare"><h2>Production vs candidate</h2>' in page
    assert page.count("data:image/png;base64,") == 1
    assert "Where the two answers differ most" in page
