"""Users, API keys with states and limits, the usage ledger and its consumer offsets.

Revision ID: 0001
Revises:
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

NOW = sa.text("now()")


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    )
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.Text, primary_key=True),
        sa.Column("hash", sa.Text, nullable=False, unique=True),
        sa.Column("user_name", sa.Text, sa.ForeignKey("users.name"), nullable=False),
        sa.Column("state", sa.Text, nullable=False, server_default="active"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        # NULL: the gateway's defaults (CHATBUS_GATEWAY_REQUESTS_PER_MINUTE, ...); no budget
        sa.Column("requests_per_minute", sa.Integer, nullable=True),
        sa.Column("tokens_per_minute", sa.Integer, nullable=True),
        sa.Column("monthly_token_budget", sa.BigInteger, nullable=True),
        sa.CheckConstraint("state IN ('active', 'revoked')", name="api_keys_state"),
        sa.CheckConstraint(
            "requests_per_minute IS NULL OR requests_per_minute > 0", name="api_keys_rpm"
        ),
        sa.CheckConstraint(
            "tokens_per_minute IS NULL OR tokens_per_minute > 0", name="api_keys_tpm"
        ),
        sa.CheckConstraint(
            "monthly_token_budget IS NULL OR monthly_token_budget >= 0", name="api_keys_budget"
        ),
    )
    op.create_index("api_keys_by_user", "api_keys", ["user_name"])
    op.create_table(
        "usage_ledger",
        sa.Column("request_id", sa.Text, primary_key=True),
        sa.Column("user_name", sa.Text, nullable=False),
        sa.Column("key_id", sa.Text, nullable=False),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("prompt_tokens", sa.Integer, nullable=False),
        sa.Column("completion_tokens", sa.Integer, nullable=False),
        sa.Column("total_tokens", sa.Integer, nullable=False),
        sa.Column("finish_reason", sa.Text, nullable=False),
        sa.Column("error_code", sa.Text, nullable=True),
        sa.Column("queue_wait_ms", sa.Float, nullable=False),
        sa.Column("time_to_first_token_ms", sa.Float, nullable=True),
        sa.Column("total_ms", sa.Float, nullable=False),
        sa.Column("worker_id", sa.Text, nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        # where it was read: a completion is counted once, at its first offset
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("offset", sa.BigInteger, nullable=False),
    )
    op.create_index("usage_ledger_by_key", "usage_ledger", ["key_id", "completed_at"])
    op.create_index("usage_ledger_by_user", "usage_ledger", ["user_name", "completed_at"])
    op.create_index("usage_ledger_by_time", "usage_ledger", ["completed_at"])
    # a key's tokens per calendar month (UTC), kept in the ledger's own transaction: the quota
    # check reads one row, however long the ledger grows
    op.create_table(
        "usage_monthly",
        sa.Column("key_id", sa.Text, primary_key=True),
        sa.Column("month", sa.Date, primary_key=True),
        sa.Column("requests", sa.BigInteger, nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger, nullable=False),
        sa.Column("completion_tokens", sa.BigInteger, nullable=False),
        sa.Column("total_tokens", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "consumer_offsets",
        sa.Column("group_id", sa.Text, primary_key=True),
        sa.Column("topic", sa.Text, primary_key=True),
        sa.Column("partition", sa.Integer, primary_key=True),
        sa.Column("next_offset", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    )


def downgrade() -> None:
    for table in ("consumer_offsets", "usage_monthly", "usage_ledger", "api_keys", "users"):
        op.drop_table(table)
