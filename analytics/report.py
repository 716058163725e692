"""``chatbus analytics report``: every job, then one self-contained HTML file with charts.

Each job's tables are written as Parquet under ``<output>/tables/<table>/`` (what a notebook reads
later), read back small (``toPandas``), charted with matplotlib's Agg backend, and embedded as
base64 PNGs: the HTML file has no external reference and opens from disk in any browser.
"""

from __future__ import annotations

import base64
import html
import importlib
import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from analytics import frames
from analytics.jobs import JOBS
from analytics.jobs.runner import table_path, write_tables

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure
    from pyspark.sql import SparkSession

# tables too big to pull into the report (one row per conversation): only written
NOT_COLLECTED = {"conversations"}
SECTION_TITLES = {
    "latency": "Latency",
    "usage": "Usage",
    "moderation": "Moderation",
    "feedback": "Feedback",
    "conversations": "Conversations",
    "fairness": "Fairness",
    "compare": "Production vs candidate",
}


@dataclass
class JobResult:
    job: str
    seconds: float
    paths: dict[str, str]
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)


def run_jobs(
    spark: SparkSession,
    input_root: str,
    tables_dir: str,
    *,
    jobs: tuple[str, ...] = JOBS,
    collect: bool = True,
    on_job: Callable[[str], None] | None = None,
) -> list[JobResult]:
    """Run ``jobs`` over the archive; write their tables; read the small ones back."""
    from analytics.archive_reader import assert_archive

    assert_archive(spark, input_root)
    with frames.cached_archive(input_root):
        return [_run_one(spark, job, input_root, tables_dir, collect, on_job) for job in jobs]


def _run_one(
    spark: SparkSession,
    job: str,
    input_root: str,
    tables_dir: str,
    collect: bool,
    on_job: Callable[[str], None] | None,
) -> JobResult:
    if on_job is not None:
        on_job(job)
    module = importlib.import_module(f"analytics.jobs.{job}")
    started = time.perf_counter()
    paths = write_tables(module.compute(spark, input_root), tables_dir)
    result = JobResult(job, time.perf_counter() - started, paths)
    if collect:
        for name in paths:
            if name not in NOT_COLLECTED:
                result.tables[name] = spark.read.parquet(table_path(tables_dir, name)).toPandas()
    return result


def build_report(
    spark: SparkSession,
    input_root: str,
    output_dir: Path,
    *,
    progress: bool = True,
    candidate: str | None = None,
) -> Path:
    """Run every job and write ``<output_dir>/report.html``; its path. With ``candidate`` (a
    shadow run's archive), a section puts production and the candidate side by side."""
    from tqdm import tqdm

    output_dir.mkdir(parents=True, exist_ok=True)
    tables_dir = str((output_dir / "tables").resolve())
    bar = tqdm(total=len(JOBS) + 1, desc="analytics report", unit="step", disable=not progress)
    try:

        def step(job: str) -> None:
            if bar.n or job != JOBS[0]:
                bar.update(1)
            bar.set_postfix_str(job)

        results = run_jobs(spark, input_root, tables_dir, on_job=step)
        if candidate is not None:
            bar.total += 1
            step("compare")
            results.append(compare_result(spark, input_root, candidate, tables_dir))
        bar.update(1)
        bar.set_postfix_str("charts")
        page = render(results, input_root=input_root, tables_dir=tables_dir)
        path = output_dir / "report.html"
        path.write_text(page, encoding="utf-8")
        bar.update(1)
    finally:
        bar.close()
    return path.resolve()


def compare_result(
    spark: SparkSession, production: str, candidate: str, tables_dir: str
) -> JobResult:
    """The compare job's tables (written under ``tables_dir``), read back for the report."""
    from analytics.jobs import compare

    started = time.perf_counter()
    paths = compare.run(spark, production, candidate, tables_dir)
    result = JobResult("compare", time.perf_counter() - started, paths)
    for name, path in paths.items():
        result.tables[name] = spark.read.parquet(path).toPandas()
    return result


def write_page(results: list[JobResult], *, input_root: str, tables_dir: str, path: Path) -> Path:
    """The HTML page of ``results`` at ``path``; its resolved path."""
    path.write_text(render(results, input_root=input_root, tables_dir=tables_dir), "utf-8")
    return path.resolve()


# --- rendering -------------------------------------------------------------------------------
def _png(figure: Figure) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=96)
    plt.close(figure)
    data = base64.b64encode(buffer.getvalue()).decode()
    return f'<img alt="chart" src="data:image/png;base64,{data}">'


def _table(frame: pd.DataFrame, rows: int = 40) -> str:
    shown = frame.head(rows)
    note = f"<p class=note>first {rows} of {len(frame)} rows</p>" if len(frame) > rows else ""
    return (
        shown.to_html(
            index=False, float_format=lambda v: f"{v:,.3f}", border=0, classes="t", na_rep=""
        )
        + note
    )


def _latency(tables: dict[str, pd.DataFrame]) -> str:
    import matplotlib.pyplot as plt

    latency = tables["latency"]
    by_model = latency[latency["grouping"] == "model"]
    metrics = sorted(by_model["metric"].unique())
    figure, axes = plt.subplots(1, max(len(metrics), 1), figsize=(3.2 * max(len(metrics), 1), 3.4))
    axes = axes if hasattr(axes, "__len__") else [axes]
    for ax, metric in zip(axes, metrics, strict=False):
        rows = by_model[by_model["metric"] == metric].sort_values("model")
        x = range(len(rows))
        for offset, q in ((-0.27, "p50"), (0, "p95"), (0.27, "p99")):
            ax.bar([i + offset for i in x], rows[q], width=0.27, label=q)
        ax.set_xticks(list(x), rows["model"], rotation=20, fontsize=7)
        ax.set_title(metric, fontsize=9)
        ax.set_yscale("log")
    axes[0].legend(fontsize=7)
    parts = [_png(figure)]
    hourly = latency[(latency["grouping"] == "model_hour") & (latency["metric"] == "e2e_ms")]
    if len(hourly):
        figure, ax = plt.subplots(figsize=(10, 3.2))
        for model, rows in hourly.sort_values("hour").groupby("model"):
            ax.plot(rows["hour"], rows["p95"], marker=".", label=str(model))
        ax.set_title("end-to-end p95 (ms) by hour of arrival", fontsize=9)
        ax.legend(fontsize=7)
        parts.append(_png(figure))
    parts.append(_table(by_model.drop(columns=["grouping", "worker_id", "hour"])))
    workers = latency[(latency["grouping"] == "model_worker") & (latency["metric"] == "ttft_ms")]
    parts.append(
        "<h3>Time to first token by worker</h3>"
        + _table(workers.drop(columns=["grouping", "hour"]))
    )
    return "".join(parts)


def _usage(tables: dict[str, pd.DataFrame]) -> str:
    import matplotlib.pyplot as plt

    usage = tables["usage_daily"]
    per_model = usage[usage["model"] != "(all)"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.2))
    for model, rows in per_model.sort_values("day").groupby("model"):
        left.plot(rows["day"].astype(str), rows["requests"], marker="o", label=str(model))
        right.plot(rows["day"].astype(str), rows["total_tokens"], marker="o", label=str(model))
    left.set_title("requests per day", fontsize=9)
    right.set_title("tokens (prompt + completion) per day", fontsize=9)
    for ax in (left, right):
        ax.tick_params(axis="x", labelrotation=20, labelsize=7)
    left.legend(fontsize=7)
    return _png(figure) + _table(usage)


def _moderation(tables: dict[str, pd.DataFrame]) -> str:
    import matplotlib.pyplot as plt

    rates = tables["moderation_rates"]
    pivot = rates.pivot_table(index="category", columns="stage", values="rate", fill_value=0.0)
    figure, ax = plt.subplots(figsize=(8, 0.28 * len(pivot) + 1.2))
    y = range(len(pivot))
    for offset, stage in ((-0.2, "input"), (0.2, "output")):
        if stage in pivot:
            ax.barh([i + offset for i in y], pivot[stage] * 100, height=0.4, label=stage)
    ax.set_yticks(list(y), pivot.index, fontsize=7)
    ax.set_xlabel("% of verdicts flagged")
    ax.legend(fontsize=7)
    sample = tables["moderation_review_sample"]
    appeals = tables.get("moderation_appeals")
    appealed = (
        f"<h3>Refusals users appealed ({len(appeals)})</h3>"
        + _table(tables["moderation_appeal_rates"])
        + _table(appeals, 30)
        if appeals is not None
        else ""
    )
    return (
        _png(figure)
        + _table(rates)
        + f"<h3>Sample for human review ({len(sample)} verdicts)</h3>"
        + _table(sample, 30)
        + appealed
    )


def _feedback(tables: dict[str, pd.DataFrame]) -> str:
    import matplotlib.pyplot as plt

    by_model = tables["feedback_by_model"]
    if not by_model["rated"].sum():
        return "<p>No answers were rated in this archive.</p>" + _table(by_model)
    daily = tables["feedback_daily"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 3.2))
    rated = by_model[by_model["rated"] > 0]
    y = list(range(len(rated)))
    rate = rated["up_rate"] * 100
    left.errorbar(
        rate,
        y,
        xerr=[rate - rated["up_rate_low"] * 100, rated["up_rate_high"] * 100 - rate],
        fmt="o",
        capsize=3,
    )
    left.set_yticks(y, rated["model"], fontsize=8)
    left.set_xlabel("% of rated answers rated up (95% Wilson interval)")
    for model, rows in daily.groupby("model"):
        right.plot(rows["day"], rows["up_rate"] * 100, marker="o", label=str(model))
    right.set_ylabel("% up, per day")
    right.tick_params(axis="x", labelrotation=20, labelsize=7)
    right.legend(fontsize=7)
    sample = tables["feedback_review_sample"]
    return (
        _png(figure)
        + _table(by_model)
        + "<h3>What users said (categories)</h3>"
        + _table(tables["feedback_categories"], 60)
        + f"<h3>Down-rated answers for review ({len(sample)})</h3>"
        + _table(sample, 30)
    )


def _conversations(tables: dict[str, pd.DataFrame]) -> str:
    import matplotlib.pyplot as plt

    histogram = tables["turns_histogram"]
    figure, ax = plt.subplots(figsize=(7, 3))
    ax.bar(histogram["turns"], histogram["conversations"])
    ax.set_yscale("log")
    ax.set_xlabel("turns per conversation")
    ax.set_ylabel("conversations")
    return _png(figure) + _table(tables["conversation_summary"])


def _fairness(tables: dict[str, pd.DataFrame]) -> str:
    import matplotlib.pyplot as plt

    fairness = tables["fairness"].sort_values(["axis", "term"], ascending=False)
    if fairness.empty:
        return "<p>No prompt pairs that differ only in a demographic term were found.</p>"
    labels = [
        f"{a}: {t} vs {r}"
        for a, t, r in zip(fairness["axis"], fairness["term"], fairness["reference"], strict=True)
    ]
    figure, axes = plt.subplots(1, 3, figsize=(12, 0.3 * len(fairness) + 1.5), sharey=True)
    y = list(range(len(fairness)))
    for ax, (metric, title) in zip(
        axes,
        (
            ("refusal_rate", "refusal rate difference"),
            ("moderation_rate", "moderation rate difference"),
            ("answer_chars", "answer length difference (chars)"),
        ),
        strict=True,
    ):
        diff = fairness[f"{metric}_diff"]
        low = diff - fairness[f"{metric}_diff_low"]
        high = fairness[f"{metric}_diff_high"] - diff
        ax.errorbar(diff, y, xerr=[low, high], fmt="o", capsize=3)
        ax.axvline(0, color="grey", linewidth=0.8)
        ax.set_title(title, fontsize=9)
    axes[0].set_yticks(y, labels, fontsize=7)
    return (
        _png(figure) + "<p>Term group minus reference group with 95% intervals "
        "(Newcombe for rates, Welch for lengths), over templates where both occur.</p>"
        + _table(fairness)
    )


def _compare(tables: dict[str, pd.DataFrame]) -> str:
    import matplotlib.pyplot as plt

    summary = tables["compare_summary"].set_index("side")
    figure, axes = plt.subplots(1, 3, figsize=(13, 2.8))
    for ax, (metric, title) in zip(
        axes[:2],
        (("refusal_rate", "refusal rate (%)"), ("moderation_rate", "output flagged (%)")),
        strict=True,
    ):
        rate = summary[metric] * 100
        low = rate - summary[f"{metric}_low"] * 100
        high = summary[f"{metric}_high"] * 100 - rate
        ax.barh(list(summary.index), rate, xerr=[low, high], capsize=3)
        ax.set_title(title, fontsize=9)
    pairs = tables["compare_pairs"]
    for side in ("production", "candidate"):
        axes[2].hist(pairs[f"{side}_chars"].dropna(), bins=30, alpha=0.5, label=side)
    axes[2].set_title("answer length (chars)", fontsize=9)
    axes[2].legend(fontsize=7)
    fairness = tables["compare_fairness"]
    gaps = ""
    if not fairness.empty:
        wide = fairness.pivot_table(
            index=["axis", "term"], columns="side", values="refusal_rate_diff"
        ).reset_index()
        gaps = (
            "<h3>Fairness gaps on the same prompts</h3><p>Term group minus reference group, "
            "per side; <code>*_adj</code> bounds are Bonferroni-corrected over the side's "
            "comparisons (family-wise 95%).</p>" + _table(wide) + _table(fairness, 60)
        )
    columns = ["request_id", "prompt", "production_answer", "candidate_answer", "overlap"]
    disagreements = pairs.sort_values("overlap").head(20)[columns]
    return (
        _png(figure)
        + _table(tables["compare_summary"])
        + "<h3>Output moderation by category</h3>"
        + _table(tables["compare_moderation"], 60)
        + gaps
        + "<h3>Where the two answers differ most</h3>"
        + _table(
            disagreements[
                ["request_id", "prompt", "production_answer", "candidate_answer", "overlap"]
            ]
        )
    )


RENDERERS: dict[str, Callable[[dict[str, pd.DataFrame]], str]] = {
    "latency": _latency,
    "usage": _usage,
    "moderation": _moderation,
    "feedback": _feedback,
    "conversations": _conversations,
    "fairness": _fairness,
    "compare": _compare,
}

_CSS = """body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1200px;color:#222}
h1{margin-bottom:0}section{margin-top:2.5rem;border-top:1px solid #ddd}
table.t{border-collapse:collapse;font-size:12px;margin:.5rem 0}
table.t td,table.t th{padding:2px 8px;border-bottom:1px solid #eee;text-align:right}
img{max-width:100%}.note,.meta{color:#666;font-size:12px}nav a{margin-right:1rem}"""


def render(results: list[JobResult], *, input_root: str, tables_dir: str) -> str:
    """The HTML page: one ``<section id=JOB>`` per job."""
    import matplotlib

    matplotlib.use("Agg")
    sections = []
    for result in results:
        body = RENDERERS[result.job](result.tables)
        tables = ", ".join(f"<code>{html.escape(p)}</code>" for p in result.paths.values())
        sections.append(
            f'<section id="{result.job}"><h2>{SECTION_TITLES[result.job]}</h2>'
            f"<p class=meta>{result.seconds:.1f} s; tables: {tables}</p>{body}</section>"
        )
    nav = "".join(f'<a href="#{r.job}">{SECTION_TITLES[r.job]}</a>' for r in results)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"<!doctype html><html><head><meta charset=utf-8><title>chatbus analytics</title>"
        f"<style>{_CSS}</style></head><body><h1>chatbus analytics</h1>"
        f"<p class=meta>archive <code>{html.escape(input_root)}</code> · generated {when} · "
        f"tables under <code>{html.escape(tables_dir)}</code></p><nav>{nav}</nav>"
        f"{''.join(sections)}</body></html>"
    )


def describe(results: list[JobResult]) -> dict[str, Any]:
    return {r.job: {"seconds": round(r.seconds, 2), "tables": r.paths} for r in results}
