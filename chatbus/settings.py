"""The one settings object of every chatbus process, grouped by concern.

Every value comes from an environment variable with the ``CHATBUS_`` prefix (or a ``.env``
file); nothing else in the project reads the environment. The variables keep their flat names
(``CHATBUS_KAFKA_BOOTSTRAP``, ``CHATBUS_MAX_INFLIGHT``, ``CHATBUS_TOPIC_PREFIX``), and each lands
in the section of its concern (``settings.kafka.bootstrap``, ``settings.worker.max_inflight``,
``settings.kafka.topic_prefix``): a section's field ``f`` reads ``CHATBUS_<SECTION>_<F>`` unless the
section names another variable in ``env_names``. Production points the same fields at real
clusters; the ``local`` section is read only by the local service manager and supervisor.

``Settings(kafka_bootstrap=...)`` and :meth:`Settings.replace` take the same flat names, and
:meth:`Settings.as_env` renders every value back as the variables a subprocess reads.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

ENV_PREFIX = "CHATBUS_"


def _default_cache_dir() -> Path:
    return Path.home() / ".cache" / "chatbus"


class Section(BaseModel):
    """One concern's settings. ``env_names`` maps a field to its variable when that is not
    ``<section>_<field>`` (the names users already set)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    env_names: ClassVar[dict[str, str]] = {}


class KafkaSettings(Section):
    env_names: ClassVar[dict[str, str]] = {
        "topic_partitions": "topic_partitions",
        "topic_replication": "topic_replication",
        "topic_prefix": "topic_prefix",
        "session_timeout_ms": "session_timeout_ms",
        "heartbeat_interval_ms": "heartbeat_interval_ms",
    }

    bootstrap: str = Field(
        "127.0.0.1:19092", description="Brokers; locally derived from kafka_port when unset."
    )
    client_id: str = "chatbus"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT",
        description="How every client talks to the brokers; managed clusters "
        "(Confluent Cloud, MSK with SASL/SCRAM, Aiven) want SASL_SSL.",
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    sasl_username: str = Field("", description="Required with SASL_PLAINTEXT / SASL_SSL.")
    sasl_password: SecretStr = SecretStr("")
    ssl_cafile: Path | None = Field(
        None,
        description="CA bundle that signed the brokers' certificates (SSL / SASL_SSL); "
        "the system's trust store when unset.",
    )
    ssl_certfile: Path | None = Field(
        None, description="Client certificate (PEM) for brokers that require mutual TLS."
    )
    ssl_keyfile: Path | None = Field(None, description="Private key of kafka_ssl_certfile.")
    topic_partitions: int = Field(4, ge=1, description="Partitions of the request/token topics.")
    topic_replication: int = Field(1, ge=1)
    topic_prefix: str = Field(
        "", description="Prefix of every topic name (isolates tenants, environments and tests)."
    )
    session_timeout_ms: int = Field(
        6000,
        ge=1000,
        description="A consumer silent this long leaves its group; its "
        "partitions (and streams) move to another member.",
    )
    heartbeat_interval_ms: int = Field(1000, ge=100)

    @model_validator(mode="after")
    def _sasl_needs_credentials(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL_") and not (
            self.sasl_username and self.sasl_password.get_secret_value()
        ):
            raise ValueError(
                f"CHATBUS_KAFKA_SECURITY_PROTOCOL={self.security_protocol} needs "
                "CHATBUS_KAFKA_SASL_USERNAME and CHATBUS_KAFKA_SASL_PASSWORD"
            )
        return self

    def topic(self, name: str) -> str:
        """The full name of a registry topic (``chat.tokens`` → ``<prefix>chat.tokens``)."""
        return f"{self.topic_prefix}{name}"


class RedisSettings(Section):
    url: str = Field(
        "redis://127.0.0.1:16379/0", description="Locally derived from redis_port when unset."
    )


class MongoSettings(Section):
    url: SecretStr = Field(
        SecretStr("mongodb://127.0.0.1:17017/"),
        description="Locally derived from mongo_port when unset.",
    )
    db: str = "chatbus"
    ferretdb_postgres_url: SecretStr = Field(
        SecretStr("postgresql://chatbus@127.0.0.1:15432/ferretdb"),
        description="When the document store is FerretDB 1.x on PostgreSQL: the PostgreSQL it "
        "stores in, where chatbus adds the indexes that let a lookup by _id use one "
        "(chatbus.history.ferretdb_lookup). Empty: none added. Ignored for any other server. "
        "Locally derived from postgres_port when unset.",
    )


class PostgresSettings(Section):
    """The relational store: accounts, API keys, quotas and the usage ledger."""

    url: SecretStr = Field(
        SecretStr("postgresql://chatbus@127.0.0.1:15432/chatbus"),
        description="libpq URL of the accounts and usage database. Locally derived from "
        "postgres_port when unset.",
    )
    usage_cache_s: float = Field(
        5.0,
        ge=0,
        description="How long a gateway trusts a key's month-to-date usage before reading the "
        "ledger again (the quota's lag behind the ledger).",
    )
    ledger_batch: int = Field(
        500, ge=1, le=10_000, description="Completions the ledger writes per transaction at most."
    )
    ledger_group: str = Field(
        "chatbus-usage-ledger",
        description="Consumer group of the usage ledger (under the topic prefix); its offsets "
        "live in PostgreSQL, with the rows.",
    )


class S3Settings(Section):
    env_names: ClassVar[dict[str, str]] = {
        "access_key_id": "aws_access_key_id",
        "secret_access_key": "aws_secret_access_key",
    }

    endpoint: str = Field(
        "http://127.0.0.1:19000", description="Locally derived from s3_port when unset."
    )
    bucket: str = "chatbus-archive"
    region: str = "us-east-1"
    access_key_id: SecretStr = SecretStr("chatbus")
    secret_access_key: SecretStr = SecretStr("chatbus-local-secret")


class ModelSettings(Section):
    env_names: ClassVar[dict[str, str]] = {
        "device": "device",
        "engine": "engine",
        "engine_threads": "engine_threads",
        "engine_sampling": "engine_sampling",
        "default_max_tokens": "default_max_tokens",
        "default_system_prompt": "default_system_prompt",
    }

    path: Path | None = Field(
        default=None,
        description="A Hugging Face causal LM folder; defaults to the model of that name that "
        "`make model` builds into the cache.",
    )
    name: str = Field(
        "smollm2-135m-instruct",
        description="The name requests use for this model; "
        "'smollm2-135m-instruct' (real, the default) and 'chatbus-tiny' (random weights, for "
        "fast tests) are built offline by `make model`.",
    )
    device: str = Field(
        "auto", description="'auto' (CUDA with bf16 when present, else CPU), 'cpu' or 'cuda'."
    )
    engine: Literal["auto", "transformers", "llama.cpp"] = Field(
        "auto",
        description="Inference engine: 'auto' runs llama.cpp on a machine without CUDA "
        "when the model folder holds a .gguf and llama-cpp-python is installed, else "
        "transformers (the GPU engine and the reference).",
    )
    engine_threads: int = Field(
        0,
        ge=0,
        description="CPU threads of an engine on CPU (llama.cpp, or torch's intra-op threads); 0: "
        "one per core.",
    )
    engine_sampling: bool = Field(
        True,
        description="Honour temperature/top_p per request. False: every request is "
        "decoded greedily, ~25% faster on CPU (no per-step top-p sort and random draw).",
    )
    default_max_tokens: int = Field(64, ge=1)
    default_system_prompt: str = Field(
        "You are a helpful assistant.",
        description="System message a worker puts first when "
        "a request has none; empty: the model's own chat template decides (SmolLM2's adds a "
        "long persona that its Q4_1 weights answer worse under llama.cpp).",
    )


class WorkerSettings(Section):
    env_names: ClassVar[dict[str, str]] = {
        "max_inflight": "max_inflight",
        "chunk_max_tokens": "chunk_max_tokens",
        "chunk_max_ms": "chunk_max_ms",
        "id": "worker_id",
        "input_topic": "inference_input_topic",
        "progress_ttl_s": "progress_ttl_s",
    }

    max_inflight: int = Field(8, ge=1, description="Requests one worker holds (batch slots).")
    chunk_max_tokens: int = Field(8, ge=1, description="Tokens coalesced into one chunk at most.")
    chunk_max_ms: float = Field(
        40.0, ge=0, description="How long a chunk waits for more tokens (the first goes at once)."
    )
    id: str | None = Field(None, description="This worker's name (default host-pid).")
    input_topic: str = Field(
        "chat.requests.approved",
        description="Registry topic the workers consume: what input "
        "moderation approved, or chat.requests to run workers with no moderation in front.",
    )
    progress_ttl_s: int = Field(86_400, ge=60, description="How long request progress is kept.")
    session_timeout_ms: int | None = Field(
        None,
        ge=1000,
        description="Session timeout of the inference group: a worker silent this long is "
        "declared dead and its streams move to another (their stall). Unset: "
        "CHATBUS_SESSION_TIMEOUT_MS. Below 6000 the brokers' group.min.session.timeout.ms "
        "must allow it (the local broker's is 1000; the local pipeline uses 1500).",
    )
    heartbeat_interval_ms: int | None = Field(
        None, ge=100, description="Heartbeat of the inference group; unset: a third of its timeout."
    )


class GatewaySettings(Section):
    env_names: ClassVar[dict[str, str]] = {"request_timeout_s": "request_timeout_s"}

    host: str = Field("127.0.0.1", description="Address the OpenAI-compatible gateway listens on.")
    port: int = Field(8000, ge=0, le=65535, description="Port of the gateway.")
    models: tuple[str, ...] = Field(
        (),
        description="Models GET /v1/models lists and requests may name (JSON list); "
        "empty: just CHATBUS_MODEL_NAME.",
    )
    max_body_bytes: int = Field(
        1_000_000, ge=1024, description="Larger request bodies are refused with 413."
    )
    max_messages: int = Field(
        256,
        ge=1,
        le=512,
        description="Messages one request may carry (more: 400, param 'messages').",
    )
    requests_per_minute: int = Field(
        60, ge=1, description="Requests per API key per minute (fixed window, in Redis)."
    )
    tokens_per_minute: int = Field(
        100_000,
        ge=1,
        description="Prompt + completion tokens per API key per minute: "
        "prompt + max_tokens are reserved on admission and corrected to the actual usage.",
    )
    key_cache_s: float = Field(
        30.0,
        ge=0,
        description="How long a verified API key is trusted without asking MongoDB again.",
    )
    key_stale_s: float = Field(
        900.0,
        ge=0,
        description="While MongoDB is out of reach, a key verified this recently keeps working "
        "(a key revoked during the outage works until MongoDB answers again); 0: refuse (503).",
    )
    lease_ttl_s: float = Field(
        15.0,
        ge=1.0,
        description="Lifetime of a gateway's lease "
        "on its reply partition; renewed every third of it.",
    )
    instance_id: str | None = Field(
        None, description="Owner name of the reply-partition lease; default host-pid-random."
    )
    request_timeout_s: float = Field(
        120.0, gt=0, description="How long a client waits for the next chunk of an answer."
    )
    resume_grace_s: float = Field(
        10.0,
        ge=0,
        description="How long an answer whose client went away keeps being generated for a "
        "client to resume it (GET …/stream); then it is cancelled. 0: cancel at once.",
    )
    resume_ttl_s: int = Field(
        3600,
        ge=60,
        description="How long a stream stays resumable (where it begins on the bus, in Redis).",
    )


class ModerationSettings(Section):
    env_names: ClassVar[dict[str, str]] = {
        "processors_app_id": "processors_app_id",
        "abuse_half_life_s": "abuse_half_life_s",
        "abuse_violation_weight": "abuse_violation_weight",
        "abuse_block_threshold": "abuse_block_threshold",
        "abuse_block_s": "abuse_block_s",
    }

    processors_app_id: str = Field(
        "chatbus.processors",
        description="Faust app id (prefixed by topic_prefix); also its "
        "consumer group and the prefix of its internal and changelog topics.",
    )
    classifier: Literal["hybrid", "rules", "embedding"] = Field(
        "embedding",
        description="Classifier: embedding + character n-gram heads (embedding, the default: "
        "the evaluation set shows the rules add false positives and no recall), rules alone, "
        "or both (hybrid).",
    )
    thresholds: dict[str, float] = Field(
        default_factory=dict,
        description="Score at or above which a category is flagged (JSON object). Categories "
        "left out use the thresholds calibrated on the evaluation set "
        "(stream_processors/moderation/calibration.json), else moderation_default_threshold.",
    )
    default_threshold: float = Field(0.65, gt=0, le=1)
    threads: int = Field(
        1,
        ge=0,
        description="CPU threads of the moderation classifier (torch); 0: one per "
        "core. One leaves the other cores to a worker on the same machine.",
    )
    service_url: str = Field(
        "http://127.0.0.1:19100",
        description="Where the gateway's /v1/moderations sends texts to be judged: the "
        "processors' ops port (POST /v1/moderations). Locally derived from metrics_base_port.",
    )
    output: bool = Field(True, description="Judge answers while they stream.")
    refusals: dict[str, str] = Field(
        default_factory=dict,
        description="What a refused user reads, per category (JSON object, category → "
        "message); categories left out keep the built-in message (plain words, and where to "
        "find help for self-harm).",
    )
    output_window_chars: int = Field(
        120, ge=8, description="New answer text that triggers a judgement of the answer so far."
    )
    output_overlap_chars: int = Field(
        60, ge=0, description="How much of the previous window the next one repeats."
    )
    abuse_half_life_s: float = Field(
        3600.0, gt=0, description="Half-life of a user's violation score (exponential decay)."
    )
    abuse_violation_weight: float = Field(1.0, gt=0, description="Score added per violation.")
    abuse_block_threshold: float = Field(
        2.5,
        gt=0,
        description="A user whose decayed score reaches this is blocked (2.5 with "
        "weight 1 and a 1 h half-life: three violations within ~30 min block, two never do).",
    )
    abuse_block_s: float = Field(900.0, gt=0, description="How long a block lasts.")


class HistorySettings(Section):
    context_max_turns: int = Field(
        20, ge=1, description="Most recent turns of a conversation kept as prompt context."
    )
    context_max_chars: int = Field(
        16_000,
        ge=256,
        description="Characters of context at most (newest turns first); the "
        "worker also drops the oldest turns until the prompt fits the model's context.",
    )
    context_ttl_s: int = Field(
        3600,
        ge=10,
        description="Lifetime of a conversation's Redis context cache after its "
        "last write; a cold cache is rebuilt from MongoDB.",
    )
    title_chars: int = Field(
        80,
        ge=8,
        description="A conversation's title: its first user message cut to this many characters.",
    )


class ArchiveSettings(Section):
    prefix: str = Field("archive", description="Key prefix of the archive in s3_bucket.")
    group: str = Field(
        "chatbus.archiver", description="Consumer group of the archiver (prefixed by topic_prefix)."
    )
    flush_bytes: int = Field(
        4_000_000,
        ge=1024,
        description="A partition's batch is uploaded when its JSON lines reach this size ...",
    )
    flush_s: float = Field(
        10.0,
        gt=0,
        description="... or when its oldest record has waited this long, whichever comes first.",
    )
    redact: bool = Field(
        True,
        description="Redact personal data (emails, phone and card "
        "numbers, as moderation marks them) before it is archived.",
    )


class AnalyticsSettings(Section):
    env_names: ClassVar[dict[str, str]] = {
        "spark_master": "spark_master",
        "spark_driver_memory": "spark_driver_memory",
        "hadoop_aws_version": "hadoop_aws_version",
    }

    spark_master: str = Field("local[2]", description="Where the analytics jobs run.")
    spark_driver_memory: str = Field("2g", description="spark.driver.memory of the jobs.")
    hadoop_aws_version: str | None = Field(
        None, description="hadoop-aws release for s3a:// (default: pyspark's Hadoop version)."
    )


class LocalSettings(Section):
    """The local services and supervisor (``make up``, ``make run``, ``chatbus ops``) only."""

    env_names: ClassVar[dict[str, str]] = {
        "kafka_port": "kafka_port",
        "kafka_controller_port": "kafka_controller_port",
        "kafka_version": "kafka_version",
        "kafka_secure_port": "kafka_secure_port",
        "redis_port": "redis_port",
        "mongo_port": "mongo_port",
        "postgres_port": "postgres_port",
        "ferretdb_version": "ferretdb_version",
        "ferretdb_backend": "ferretdb_backend",
        "s3_port": "s3_port",
    }

    kafka_brokers: int = Field(
        1,
        ge=1,
        le=5,
        description="Local Kafka nodes (controller and broker each): 1, or 3 for the "
        "production shape in miniature (node N listens on the ports of node 1 + 100*(N-1); "
        "topics replicated 3 times with min.insync.replicas 2).",
    )
    # The local services' ports sit below Linux's ephemeral range (32768-60999): a port in it can
    # be taken, while its service restarts, by any client connection's source port (seen: the
    # broker could not bind 39092 again, held by a client's connection to the document store).
    kafka_port: int = Field(19092, description="Port of the local Kafka broker's client listener.")
    kafka_controller_port: int = Field(19093, description="Port of the local KRaft controller.")
    kafka_version: str = "4.1.1"
    kafka_secure_port: int = Field(
        19094, description="Port of the local broker's SASL_SSL listener (tests of that path)."
    )
    redis_port: int = 16379
    mongo_port: int = 17017
    postgres_port: int = Field(15432, description="Port of the local PostgreSQL (loopback only).")
    ferretdb_version: str = "v1.24.2"
    ferretdb_backend: Literal["postgresql", "sqlite"] = Field(
        "postgresql",
        description="Where the local FerretDB keeps documents: the local PostgreSQL (database "
        "'ferretdb'; 1.7-2.7x the history writes of SQLite, docs/benchmarks.md) or SQLite files "
        "under .chatbus/ferretdb/data. Switching starts from an empty document store.",
    )
    s3_port: int = 19000
    worker_replicas: int = Field(
        1,
        ge=0,
        description="Inference workers the local "
        "supervisor starts (change it live: chatbus ops scale).",
    )
    models: tuple[str, ...] = Field(
        (),
        description="Models the local supervisor serves side by side, one consumer group "
        'each (JSON list, e.g. ["smollm2-135m-instruct", "chatbus-tiny"]); empty: just '
        "model_name. Each has its own worker component (worker, worker@<model>).",
    )
    metrics_base_port: int = Field(
        19100,
        ge=1024,
        le=65000,
        description="Local components serve /metrics, /livez and "
        "/readyz from here up: processors +0, archiver-N +10+N, worker-N +20+N, ledger-N "
        "+30+N, further models' workers +40 on (the gateway: its port).",
    )
    restart_backoff_max_s: float = Field(
        30.0,
        gt=0,
        description="Longest wait before the supervisor restarts a component that "
        "keeps crashing (the wait doubles from 1 s per crash in a row).",
    )


SECTIONS: dict[str, type[Section]] = {
    "kafka": KafkaSettings,
    "redis": RedisSettings,
    "mongo": MongoSettings,
    "postgres": PostgresSettings,
    "s3": S3Settings,
    "model": ModelSettings,
    "worker": WorkerSettings,
    "gateway": GatewaySettings,
    "moderation": ModerationSettings,
    "history": HistorySettings,
    "archive": ArchiveSettings,
    "analytics": AnalyticsSettings,
    "local": LocalSettings,
}


def _flat_fields() -> dict[str, tuple[str, str]]:
    """Every section field by its flat name: ``kafka_bootstrap`` → ("kafka", "bootstrap")."""
    flat: dict[str, tuple[str, str]] = {}
    for section, cls in SECTIONS.items():
        for name in cls.model_fields:
            flat[cls.env_names.get(name, f"{section}_{name}")] = (section, name)
    return flat


FLAT_FIELDS = _flat_fields()

NODE_PORT_STEP = 100  # local Kafka node N listens on node 1's ports + 100*(N-1)


def local_bootstrap(first_port: int, brokers: int) -> str:
    """The bootstrap list of a local cluster of ``brokers`` nodes."""
    return ",".join(f"127.0.0.1:{first_port + NODE_PORT_STEP * i}" for i in range(brokers))


# A local service's port moves its clients' address too, unless the address is set.
_ADDRESS_FROM_LOCAL_PORT = {
    ("kafka", "bootstrap"): ("kafka_port", "127.0.0.1:{}"),
    ("redis", "url"): ("redis_port", "redis://127.0.0.1:{}/0"),
    ("mongo", "url"): ("mongo_port", "mongodb://127.0.0.1:{}/"),
    ("mongo", "ferretdb_postgres_url"): (
        "postgres_port",
        "postgresql://chatbus@127.0.0.1:{}/ferretdb",
    ),
    ("s3", "endpoint"): ("s3_port", "http://127.0.0.1:{}"),
    ("postgres", "url"): ("postgres_port", "postgresql://chatbus@127.0.0.1:{}/chatbus"),
    ("moderation", "service_url"): ("metrics_base_port", "http://127.0.0.1:{}"),  # processors +0
}


def _derived_address(local: LocalSettings, section: str, name: str) -> str:
    """The address of ``section.name`` that the local ports give (when no address is set)."""
    port, template = _ADDRESS_FROM_LOCAL_PORT[(section, name)]
    if (section, name) == ("kafka", "bootstrap"):
        return local_bootstrap(local.kafka_port, local.kafka_brokers)
    return template.format(getattr(local, port))


def _plain(value: Any) -> Any:
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def _field_info(flat: str) -> FieldInfo:
    section, name = FLAT_FIELDS[flat]
    return SECTIONS[section].model_fields[name]


class _FlatEnvironment:
    """Reads each section field from its flat variable (``CHATBUS_MAX_INFLIGHT``), as the
    stock sources read the top-level ones; JSON values (lists, objects) are decoded here."""

    env_vars: Mapping[str, str | None]
    env_prefix: str
    env_ignore_empty: bool

    def __call__(self) -> dict[str, Any]:
        data: dict[str, Any] = super().__call__()  # type: ignore[misc]
        for flat in FLAT_FIELDS:
            raw = self.env_vars.get(self._apply_case_sensitive(self.env_prefix + flat))  # type: ignore[attr-defined]
            if raw is None or (raw == "" and self.env_ignore_empty):
                continue
            field = _field_info(flat)
            complex_value = self.field_is_complex(field)  # type: ignore[attr-defined]
            decode = self.decode_complex_value  # type: ignore[attr-defined]
            data[flat] = decode(flat, field, raw) if complex_value else raw
        return data


class _FlatEnvSource(_FlatEnvironment, EnvSettingsSource):
    pass


class _FlatDotEnvSource(_FlatEnvironment, DotEnvSettingsSource):
    pass


class Settings(BaseSettings):
    """Configuration for every chatbus component (variables ``CHATBUS_*``), one section per
    concern."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", extra="ignore", frozen=True
    )

    state_dir: Path = Field(
        default=Path(".chatbus"),
        description="Data, logs, PID files and benchmark results of the local services.",
    )
    cache_dir: Path = Field(
        default_factory=_default_cache_dir,
        description="Large downloads and builds kept outside the checkout (jars, binaries, model).",
    )
    log_level: str = "INFO"
    log_json: bool = True
    metrics_port: int = Field(0, ge=0, description="Prometheus port of this process; 0 = off.")
    metrics_host: str = Field(
        "127.0.0.1",
        description="Address the ops port (/metrics, /livez, /readyz; the processors' "
        "moderation check) listens on; 0.0.0.0 in a pod, so probes and scrapes reach it.",
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    mongo: MongoSettings = Field(default_factory=MongoSettings)
    postgres: PostgresSettings = Field(default_factory=PostgresSettings)
    s3: S3Settings = Field(default_factory=S3Settings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    moderation: ModerationSettings = Field(default_factory=ModerationSettings)
    history: HistorySettings = Field(default_factory=HistorySettings)
    archive: ArchiveSettings = Field(default_factory=ArchiveSettings)
    analytics: AnalyticsSettings = Field(default_factory=AnalyticsSettings)
    local: LocalSettings = Field(default_factory=LocalSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        dotenv = dotenv_settings if isinstance(dotenv_settings, DotEnvSettingsSource) else None
        return (
            init_settings,
            _FlatEnvSource(settings_cls),
            _FlatDotEnvSource(settings_cls, env_file=dotenv.env_file if dotenv else None),
            file_secret_settings,
        )

    @model_validator(mode="before")
    @classmethod
    def _group_flat_names(cls, data: Any) -> Any:
        """``kafka_bootstrap=...`` (a variable's name, lower case) lands in its section; an
        address not given follows its local port (moving CHATBUS_KAFKA_PORT moves the clients)."""
        if not isinstance(data, dict):
            return data
        grouped: dict[str, Any] = {}
        flat_values: dict[tuple[str, str], Any] = {}
        for key, value in data.items():
            if key in FLAT_FIELDS:
                flat_values[FLAT_FIELDS[key]] = value
            elif key in SECTIONS and isinstance(value, Section):
                grouped[key] = value.model_dump()
            else:
                grouped[key] = value
        for (section, name), value in flat_values.items():
            part = grouped.get(section)
            grouped[section] = {**(part if isinstance(part, dict) else {}), name: value}
        local: dict[str, Any] = grouped.get("local") or {}
        brokers = int(local.get("kafka_brokers") or 1)
        kafka: dict[str, Any] = grouped.get("kafka") or {}
        bootstrap_given = "bootstrap" in kafka
        for (section, name), (port, template) in _ADDRESS_FROM_LOCAL_PORT.items():
            given: dict[str, Any] = grouped.get(section) or {}
            if port in local and name not in given:
                grouped[section] = {**given, name: template.format(local[port])}
        if brokers > 1:  # a local cluster: every node's listener, topics replicated on three
            kafka = grouped.get("kafka") or {}
            first = int(local.get("kafka_port") or LocalSettings.model_fields["kafka_port"].default)
            if not bootstrap_given:
                kafka = {**kafka, "bootstrap": local_bootstrap(first, brokers)}
            if "topic_replication" not in kafka:
                kafka = {**kafka, "topic_replication": min(3, brokers)}
            grouped["kafka"] = kafka
        return grouped

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` (flat names or whole sections), validated again. An address
        that followed a local port follows the port's new value, unless ``changes`` set it."""
        copy = type(self).model_validate({**self._fields(), **changes})
        moved: dict[str, dict[str, Any]] = {}
        for section, name in _ADDRESS_FROM_LOCAL_PORT:
            before = _derived_address(self.local, section, name)
            after = _derived_address(copy.local, section, name)
            address = _plain(getattr(getattr(self, section), name))
            unchanged = _plain(getattr(getattr(copy, section), name)) == address  # not in changes
            if before != after and address == before and unchanged:
                moved.setdefault(section, getattr(copy, section).model_dump())[name] = after
        return type(self).model_validate({**copy._fields(), **moved}) if moved else copy

    def _fields(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in type(self).model_fields}

    def as_env(self) -> dict[str, str]:
        """Every value as the ``CHATBUS_*`` variables that reproduce these settings in a
        subprocess (secrets included: the child needs them)."""
        env: dict[str, str] = {}
        for name in type(self).model_fields:
            if name not in SECTIONS:
                env[ENV_PREFIX + name.upper()] = _env_text(getattr(self, name))
        for flat, (section, name) in FLAT_FIELDS.items():
            value = getattr(getattr(self, section), name)
            if value is not None:
                env[ENV_PREFIX + flat.upper()] = _env_text(value)
        return env

    def topic(self, name: str) -> str:
        """The full name of a registry topic (``chat.tokens`` → ``<prefix>chat.tokens``)."""
        return self.kafka.topic(name)

    @property
    def inference_session_timeout_ms(self) -> int:
        return self.worker.session_timeout_ms or self.kafka.session_timeout_ms

    @property
    def inference_heartbeat_interval_ms(self) -> int:
        if self.worker.heartbeat_interval_ms is not None:
            return self.worker.heartbeat_interval_ms
        if self.worker.session_timeout_ms is None:
            return self.kafka.heartbeat_interval_ms
        return max(100, self.worker.session_timeout_ms // 3)

    @property
    def resolved_model_path(self) -> Path:
        return self.model.path or self.model_folder(self.model.name)

    def model_folder(self, name: str) -> Path:
        """Where ``make model`` keeps the model called ``name``."""
        if name == self.model.name and self.model.path is not None:
            return self.model.path
        return self.cache_dir / "models" / name

    @property
    def local_model_names(self) -> tuple[str, ...]:
        """The models run locally: the model's name first, then the rest of ``local.models``."""
        return tuple(dict.fromkeys((self.model.name, *self.local.models)))

    @property
    def served_models(self) -> tuple[str, ...]:
        """The models the gateway serves (``gateway.models``, or the local models)."""
        return self.gateway.models or self.local_model_names

    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"


def _env_text(value: Any) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | tuple | list):
        return json.dumps(value)
    return str(value)


def section_variables() -> Iterator[tuple[str, str, str]]:
    """(variable, section, field) of every section field: what docs and checks list."""
    for flat, (section, name) in FLAT_FIELDS.items():
        yield ENV_PREFIX + flat.upper(), section, name


def variable_names() -> set[str]:
    """Every ``CHATBUS_*`` variable the settings read."""
    top = {ENV_PREFIX + name.upper() for name in Settings.model_fields if name not in SECTIONS}
    return top | {variable for variable, _, _ in section_variables()}


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
