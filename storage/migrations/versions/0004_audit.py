"""The audit trail: one hash chain of AuditEvents per patient.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_KEY = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_ID = sa.String(length=64).with_variant(sa.String(length=64, collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("pk", _KEY, autoincrement=True, nullable=False),
        sa.Column("event_id", _ID, nullable=False),
        sa.Column("patient_id", _ID, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("recorded", sa.BigInteger(), nullable=False),
        sa.Column("agent", sa.String(length=256), nullable=False),
        sa.Column("outcome", sa.String(length=2), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("patient_id", "seq", name="uq_audit_patient_seq"),
        sa.UniqueConstraint("event_id", name="uq_audit_event"),
    )
    op.create_index("ix_audit_patient_pk", "audit_log", ["patient_id", "pk"])
    op.create_table(
        "audit_chain",
        sa.Column("patient_id", _ID, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("head", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("patient_id"),
    )


def downgrade() -> None:
    op.drop_table("audit_chain")
    op.drop_index("ix_audit_patient_pk", table_name="audit_log")
    op.drop_table("audit_log")
