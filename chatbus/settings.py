"""The one settings object of every chatbus process.

Every value comes from an environment variable with the ``CHATBUS_`` prefix (or a ``.env``
file); nothing else in the project reads the environment. Production points the same fields
at real clusters.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_cache_dir() -> Path:
    return Path.home() / ".cache" / "chatbus"


class Settings(BaseSettings):
    """Configuration for every chatbus component (env prefix ``CHATBUS_``)."""

    model_config = SettingsConfigDict(
        env_prefix="CHATBUS_", env_file=".env", extra="ignore", frozen=True
    )

    # --- where things live -------------------------------------------------------------
    state_dir: Path = Field(
        default=Path(".chatbus"),
        description="Data, logs, PID files and benchmark results of the local services.",
    )
    cache_dir: Path = Field(
        default_factory=_default_cache_dir,
        description="Large downloads and builds kept outside the checkout (jars, binaries, model).",
    )

    # --- Kafka ---------------------------------------------------------------------------
    kafka_bootstrap: str = Field(
        "127.0.0.1:39092", description="Brokers; locally derived from kafka_port when unset."
    )
    kafka_port: int = Field(39092, description="Port of the local Kafka broker's client listener.")
    kafka_controller_port: int = Field(39093, description="Port of the local KRaft controller.")
    kafka_version: str = "4.1.1"
    kafka_client_id: str = "chatbus"
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="How every client talks to the brokers; managed clusters "
        "(Confluent Cloud, MSK with SASL/SCRAM, Aiven) want SASL_SSL.")
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    kafka_sasl_username: str = Field("", description="Required with SASL_PLAINTEXT / SASL_SSL.")
    kafka_sasl_password: SecretStr = SecretStr("")
    kafka_ssl_cafile: Path | None = Field(
        None, description="CA bundle that signed the brokers' certificates (SSL / SASL_SSL); "
        "the system's trust store when unset.")
    kafka_ssl_certfile: Path | None = Field(
        None, description="Client certificate (PEM) for brokers that require mutual TLS.")
    kafka_ssl_keyfile: Path | None = Field(None, description="Private key of kafka_ssl_certfile.")
    kafka_secure_port: int = Field(
        39094, description="Port of the local broker's SASL_SSL listener (tests of that path).")
    topic_partitions: int = Field(4, ge=1, description="Partitions of the request/token topics.")
    topic_replication: int = Field(1, ge=1)
    topic_prefix: str = Field(
        "", description="Prefix of every topic name (isolates tenants, environments and tests)."
    )
    request_timeout_s: float = Field(
        120.0, gt=0, description="How long a client waits for the next chunk of an answer."
    )

    # --- Redis / MongoDB / S3 ------------------------------------------------------------
    redis_url: str = Field(
        "redis://127.0.0.1:36379/0", description="Locally derived from redis_port when unset."
    )
    redis_port: int = 36379
    mongo_url: SecretStr = SecretStr("mongodb://127.0.0.1:37017/")
    mongo_port: int = 37017
    mongo_db: str = "chatbus"
    ferretdb_version: str = "v1.24.2"
    s3_endpoint: str = Field(
        "http://127.0.0.1:39000", description="Locally derived from s3_port when unset."
    )
    s3_port: int = 39000
    s3_bucket: str = "chatbus-archive"
    s3_region: str = "us-east-1"
    aws_access_key_id: SecretStr = SecretStr("chatbus")
    aws_secret_access_key: SecretStr = SecretStr("chatbus-local-secret")

    # --- model and inference -------------------------------------------------------------
    model_path: Path | None = Field(
        default=None,
        description="A Hugging Face causal LM folder; defaults to the model of that name that "
        "`make model` builds into the cache.",
    )
    model_name: str = Field(
        "smollm2-135m-instruct", description="The name requests use for this model; "
        "'smollm2-135m-instruct' (real, the default) and 'chatbus-tiny' (random weights, for "
        "fast tests) are built offline by `make model`.")
    device: str = Field(
        "auto", description="'auto' (CUDA with bf16 when present, else CPU), 'cpu' or 'cuda'."
    )
    max_inflight: int = Field(8, ge=1, description="Requests one worker holds (batch slots).")
    engine: Literal["auto", "transformers", "llama.cpp"] = Field(
        "auto", description="Inference engine: 'auto' runs llama.cpp on a machine without CUDA "
        "when the model folder holds a .gguf and llama-cpp-python is installed, else "
        "transformers (the GPU engine and the reference).")
    engine_threads: int = Field(
        0, ge=0, description="CPU threads of the llama.cpp engine; 0: one per core.")
    engine_sampling: bool = Field(
        True, description="Honour temperature/top_p per request. False: every request is "
        "decoded greedily, ~25% faster on CPU (no per-step top-p sort and random draw)."
    )
    default_max_tokens: int = Field(64, ge=1)
    default_system_prompt: str = Field(
        "You are a helpful assistant.", description="System message a worker puts first when "
        "a request has none; empty: the model's own chat template decides (SmolLM2's adds a "
        "long persona that its Q4_1 weights answer worse under llama.cpp).")
    chunk_max_tokens: int = Field(8, ge=1, description="Tokens coalesced into one chunk at most.")
    chunk_max_ms: float = Field(
        40.0, ge=0, description="How long a chunk waits for more tokens (the first goes at once)."
    )
    worker_id: str | None = None
    inference_input_topic: str = Field(
        "chat.requests.approved", description="Registry topic the workers consume: what input "
        "moderation approved, or chat.requests to run workers with no moderation in front."
    )
    session_timeout_ms: int = Field(
        6000, ge=1000, description="A worker silent this long leaves the group; its partitions "
        "(and streams) move to another member."
    )
    heartbeat_interval_ms: int = Field(1000, ge=100)
    progress_ttl_s: int = Field(86_400, ge=60, description="How long request progress is kept.")

    # --- HTTP gateway (producers/gateway) --------------------------------------------------
    gateway_host: str = Field("127.0.0.1", description="Address the OpenAI-compatible gateway "
                              "listens on.")
    gateway_port: int = Field(8000, ge=0, le=65535, description="Port of the gateway.")
    gateway_models: tuple[str, ...] = Field(
        (), description="Models GET /v1/models lists and requests may name (JSON list); "
        "empty: just CHATBUS_MODEL_NAME.")
    gateway_max_body_bytes: int = Field(1_000_000, ge=1024, description="Larger request bodies "
                                        "are refused with 413.")
    gateway_max_messages: int = Field(256, ge=1, le=512, description="Messages one request may "
                                      "carry (more: 400, param 'messages').")
    gateway_requests_per_minute: int = Field(60, ge=1, description="Requests per API key per "
                                             "minute (fixed window, in Redis).")
    gateway_tokens_per_minute: int = Field(
        100_000, ge=1, description="Prompt + completion tokens per API key per minute: "
        "prompt + max_tokens are reserved on admission and corrected to the actual usage.")
    gateway_key_cache_s: float = Field(30.0, ge=0, description="How long a verified API key is "
                                       "trusted without asking MongoDB again.")
    gateway_lease_ttl_s: float = Field(15.0, ge=1.0, description="Lifetime of a gateway's lease "
                                       "on its reply partition; renewed every third of it.")
    gateway_instance_id: str | None = Field(None, description="Owner name of the reply-partition "
                                            "lease; default host-pid-random.")

    # --- stream processors (Faust) and moderation -----------------------------------------
    processors_app_id: str = Field(
        "chatbus.processors", description="Faust app id (prefixed by topic_prefix); also its "
        "consumer group and the prefix of its internal and changelog topics."
    )
    moderation_classifier: Literal["hybrid", "rules", "embedding"] = Field(
        "hybrid", description="Input classifier: rules + embedding model (hybrid), or either alone."
    )
    moderation_thresholds: dict[str, float] = Field(
        default_factory=lambda: {
            "harassment": 0.65, "harassment/threatening": 0.6, "hate": 0.65,
            "hate/threatening": 0.55, "illicit": 0.65, "illicit/violent": 0.55,
            "self-harm": 0.6, "self-harm/intent": 0.55, "self-harm/instructions": 0.55,
            "sexual": 0.65, "sexual/minors": 0.5, "violence": 0.7, "violence/graphic": 0.6,
        },
        description="Score at or above which a category is flagged (JSON object; categories "
        "left out use moderation_default_threshold).",
    )
    moderation_default_threshold: float = Field(0.65, gt=0, le=1)
    moderation_threads: int = Field(
        1, ge=0, description="CPU threads of the moderation classifier (torch); 0: one per "
        "core. One leaves the other cores to a worker on the same machine.")
    moderation_output: bool = Field(True, description="Judge answers while they stream.")
    moderation_output_window_chars: int = Field(
        120, ge=8, description="New answer text that triggers a judgement of the answer so far."
    )
    moderation_output_overlap_chars: int = Field(
        60, ge=0, description="How much of the previous window the next one repeats."
    )
    abuse_half_life_s: float = Field(
        3600.0, gt=0, description="Half-life of a user's violation score (exponential decay)."
    )
    abuse_violation_weight: float = Field(1.0, gt=0, description="Score added per violation.")
    abuse_block_threshold: float = Field(
        2.5, gt=0, description="A user whose decayed score reaches this is blocked (2.5 with "
        "weight 1 and a 1 h half-life: three violations within ~30 min block, two never do)."
    )
    abuse_block_s: float = Field(900.0, gt=0, description="How long a block lasts.")

    # --- conversation history (chatbus/history) -------------------------------------------
    history_context_max_turns: int = Field(
        20, ge=1, description="Most recent turns of a conversation kept as prompt context.")
    history_context_max_chars: int = Field(
        16_000, ge=256, description="Characters of context at most (newest turns first); the "
        "worker also drops the oldest turns until the prompt fits the model's context.")
    history_context_ttl_s: int = Field(
        3600, ge=10, description="Lifetime of a conversation's Redis context cache after its "
        "last write; a cold cache is rebuilt from MongoDB.")
    history_title_chars: int = Field(80, ge=8, description="A conversation's title: its first "
                                     "user message cut to this many characters.")

    # --- archive (stream_processors/archiver) and analytics (analytics/) ------------------
    archive_prefix: str = Field("archive", description="Key prefix of the archive in s3_bucket.")
    archive_group: str = Field("chatbus.archiver", description="Consumer group of the archiver "
                               "(prefixed by topic_prefix).")
    archive_flush_bytes: int = Field(4_000_000, ge=1024, description="A partition's batch is "
                                     "uploaded when its JSON lines reach this size ...")
    archive_flush_s: float = Field(10.0, gt=0, description="... or when its oldest record has "
                                   "waited this long, whichever comes first.")
    archive_redact: bool = Field(True, description="Redact personal data (emails, phone and card "
                                 "numbers, as moderation marks them) before it is archived.")
    spark_master: str = Field("local[2]", description="Where the analytics jobs run.")
    spark_driver_memory: str = Field("2g", description="spark.driver.memory of the jobs.")
    hadoop_aws_version: str | None = Field(
        None, description="hadoop-aws release for s3a:// (default: pyspark's Hadoop version).")

    # --- the local supervisor (infra/local/supervisor.py, `make run`, `chatbus ops`) -------
    local_worker_replicas: int = Field(1, ge=0, description="Inference workers the local "
                                       "supervisor starts (change it live: chatbus ops scale).")
    local_models: tuple[str, ...] = Field(
        (), description="Models the local supervisor serves side by side, one consumer group "
        "each (JSON list, e.g. [\"smollm2-135m-instruct\", \"chatbus-tiny\"]); empty: just "
        "model_name. Each has its own worker component (worker, worker@<model>).")
    local_metrics_base_port: int = Field(
        39100, ge=1024, le=65000, description="Local components serve /metrics, /livez and "
        "/readyz from here up: processors +0, archiver +1, worker-N +1+N (the gateway: its port).")
    local_restart_backoff_max_s: float = Field(
        30.0, gt=0, description="Longest wait before the supervisor restarts a component that "
        "keeps crashing (the wait doubles from 1 s per crash in a row).")

    # --- observability -------------------------------------------------------------------
    log_level: str = "INFO"
    log_json: bool = True
    metrics_port: int = Field(0, ge=0, description="Prometheus port of this process; 0 = off.")

    def topic(self, name: str) -> str:
        """The full name of a registry topic (``chat.tokens`` → ``<prefix>chat.tokens``)."""
        return f"{self.topic_prefix}{name}"

    @model_validator(mode="before")
    @classmethod
    def _addresses_follow_local_ports(cls, data: Any) -> Any:
        """Moving a local service's port (say CHATBUS_KAFKA_PORT) moves its clients too."""
        if not isinstance(data, dict):
            return data
        derived = {
            "kafka_bootstrap": ("kafka_port", "127.0.0.1:{}"),
            "redis_url": ("redis_port", "redis://127.0.0.1:{}/0"),
            "mongo_url": ("mongo_port", "mongodb://127.0.0.1:{}/"),
            "s3_endpoint": ("s3_port", "http://127.0.0.1:{}"),
        }
        for address, (port, template) in derived.items():
            if address not in data and port in data:
                data[address] = template.format(data[port])
        return data

    @model_validator(mode="after")
    def _sasl_needs_credentials(self) -> Settings:
        if self.kafka_security_protocol.startswith("SASL_") and not (
            self.kafka_sasl_username and self.kafka_sasl_password.get_secret_value()
        ):
            raise ValueError(
                f"CHATBUS_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs "
                "CHATBUS_KAFKA_SASL_USERNAME and CHATBUS_KAFKA_SASL_PASSWORD"
            )
        return self

    @property
    def resolved_model_path(self) -> Path:
        return self.model_path or self.model_folder(self.model_name)

    def model_folder(self, name: str) -> Path:
        """Where ``make model`` keeps the model called ``name``."""
        if name == self.model_name and self.model_path is not None:
            return self.model_path
        return self.cache_dir / "models" / name

    @property
    def local_model_names(self) -> tuple[str, ...]:
        """The models run locally: ``model_name`` first, then the rest of ``local_models``."""
        return tuple(dict.fromkeys((self.model_name, *self.local_models)))

    @property
    def served_models(self) -> tuple[str, ...]:
        """The models the gateway serves (``gateway_models``, or the local models)."""
        return self.gateway_models or self.local_model_names

    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
