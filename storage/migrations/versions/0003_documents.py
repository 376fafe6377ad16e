"""Documents: Binary contents in the blob store, the document registry, ITI-65 submissions.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_KEY = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_ID = sa.String(length=64).with_variant(sa.String(length=64, collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "binary_content",
        sa.Column("binary_id", _ID, nullable=False),
        sa.Column("blob_key", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha1", sa.String(length=28), nullable=False),
        sa.Column("content_type", sa.String(length=256), nullable=False),
        sa.PrimaryKeyConstraint("binary_id"),
    )
    op.create_index("ix_binary_blob", "binary_content", ["blob_key"])
    op.create_table(
        "document_registry",
        sa.Column("pk", _KEY, autoincrement=True, nullable=False),
        sa.Column("master_system", sa.String(length=256), nullable=False),
        sa.Column("master_value", sa.String(length=256), nullable=False),
        sa.Column("document_id", _ID, nullable=False),
        sa.Column("patient_id", _ID, nullable=False),
        sa.Column("filed_by", sa.String(length=256), nullable=False),
        sa.Column("content_sha1", sa.String(length=256), nullable=False),
        sa.Column("submission_pk", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("master_system", "master_value", name="uq_document_master"),
    )
    op.create_index("ix_document_resource", "document_registry", ["document_id"])
    op.create_table(
        "submission",
        sa.Column("pk", _KEY, autoincrement=True, nullable=False),
        sa.Column("response", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("pk"),
    )


def downgrade() -> None:
    op.drop_table("submission")
    op.drop_index("ix_document_resource", table_name="document_registry")
    op.drop_table("document_registry")
    op.drop_index("ix_binary_blob", table_name="binary_content")
    op.drop_table("binary_content")
