"""Notifications: the outbox's deliveries and attempts, and app Subscriptions' routes.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_KEY = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_ID = sa.String(length=64).with_variant(sa.String(length=64, collation="C"), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("outbox_event") as batch:
        # Events written before this revision are old news: they are not delivered now.
        batch.add_column(sa.Column("fanned_out", sa.Boolean(), nullable=False,
                                   server_default=sa.true()))
    with op.batch_alter_table("outbox_event") as batch:
        batch.alter_column("fanned_out", server_default=sa.false())
    op.create_index("ix_outbox_fan_out", "outbox_event", ["fanned_out", "pk"])
    op.create_index("ix_outbox_patient", "outbox_event", ["patient_id", "pk"])
    op.create_table(
        "outbox_delivery",
        sa.Column("pk", _KEY, autoincrement=True, nullable=False),
        sa.Column("event_pk", _KEY, nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("target", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.BigInteger(), nullable=False),
        sa.Column("lease_until", sa.BigInteger(), nullable=False),
        sa.Column("last_error", sa.String(length=512), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("done_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("event_pk", "channel", "target", name="uq_delivery_target"),
    )
    op.create_index("ix_delivery_due", "outbox_delivery", ["status", "next_attempt_at"])
    op.create_table(
        "outbox_attempt",
        sa.Column("pk", _KEY, autoincrement=True, nullable=False),
        sa.Column("delivery_pk", _KEY, nullable=False),
        sa.Column("attempted_at", sa.BigInteger(), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("error", sa.String(length=512), nullable=True),
        sa.PrimaryKeyConstraint("pk"),
    )
    op.create_index("ix_attempt_delivery", "outbox_attempt", ["delivery_pk"])
    op.create_table(
        "subscription_route",
        sa.Column("subscription_id", _ID, nullable=False),
        sa.Column("topic", sa.String(length=256), nullable=False),
        sa.Column("patient_id", _ID, nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=False),
        sa.Column("endpoint", sa.String(length=2048), nullable=False),
        sa.Column("headers", sa.LargeBinary(), nullable=False),
        sa.Column("content", sa.String(length=16), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("events_sent", sa.BigInteger(), nullable=False),
        sa.Column("since", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("subscription_id"),
    )
    op.create_index("ix_subscription_route_patient", "subscription_route",
                    ["patient_id", "topic"])


def downgrade() -> None:
    op.drop_index("ix_subscription_route_patient", table_name="subscription_route")
    op.drop_table("subscription_route")
    op.drop_index("ix_attempt_delivery", table_name="outbox_attempt")
    op.drop_table("outbox_attempt")
    op.drop_index("ix_delivery_due", table_name="outbox_delivery")
    op.drop_table("outbox_delivery")
    op.drop_index("ix_outbox_patient", table_name="outbox_event")
    op.drop_index("ix_outbox_fan_out", table_name="outbox_event")
    with op.batch_alter_table("outbox_event") as batch:
        batch.drop_column("fanned_out")
