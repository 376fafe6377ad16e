"""Rate-limit counters shared by every process (login and token endpoint).

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_limit",
        sa.Column("window_start", sa.BigInteger(), nullable=False),
        sa.Column("bucket", sa.String(length=64), nullable=False),
        sa.Column("hits", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("window_start", "bucket"),
    )


def downgrade() -> None:
    op.drop_table("rate_limit")
