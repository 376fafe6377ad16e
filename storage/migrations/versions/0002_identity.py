"""Identity: the INSi and RPPS directory mocks, OAuth clients, codes and refresh tokens.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_KEY = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "insi_identity",
        sa.Column("pk", _KEY, autoincrement=True, nullable=False),
        sa.Column("system", sa.String(length=64), nullable=False),
        sa.Column("nir", sa.String(length=15), nullable=False),
        sa.Column("birth_family_name", sa.String(length=256), nullable=False),
        sa.Column("given_names", sa.Text(), nullable=False),
        sa.Column("gender", sa.String(length=8), nullable=False),
        sa.Column("birth_date", sa.String(length=10), nullable=False),
        sa.Column("birth_place", sa.String(length=5), nullable=True),
        sa.Column("name_key", sa.String(length=256), nullable=False),
        sa.Column("email", sa.String(length=256), nullable=True),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("nir", name="uq_insi_nir"),
    )
    op.create_index("ix_insi_traits", "insi_identity", ["name_key", "birth_date"])
    op.create_table(
        "health_professional",
        sa.Column("pk", _KEY, autoincrement=True, nullable=False),
        sa.Column("rpps", sa.String(length=11), nullable=False),
        sa.Column("family_name", sa.String(length=256), nullable=False),
        sa.Column("given_name", sa.String(length=256), nullable=False),
        sa.Column("profession_code", sa.String(length=8), nullable=False),
        sa.Column("category_code", sa.String(length=8), nullable=False),
        sa.Column("savoir_faire", sa.String(length=16), nullable=True),
        sa.Column("organisation", sa.String(length=256), nullable=True),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("rpps", name="uq_professional_rpps"),
    )
    op.create_table(
        "oauth_client",
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=True),
        sa.Column("redirect_uris", sa.Text(), nullable=False),
        sa.Column("allowed_scopes", sa.Text(), nullable=False),
        sa.Column("grant_types", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("client_id"),
    )
    op.create_table(
        "oauth_code",
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("redirect_uri", sa.Text(), nullable=False),
        sa.Column("code_challenge", sa.String(length=128), nullable=False),
        sa.Column("subject", sa.String(length=128), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("nonce", sa.String(length=256), nullable=True),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("used", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("code_hash"),
    )
    op.create_table(
        "oauth_refresh_token",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("family", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.String(length=128), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("used", sa.Boolean(), nullable=False),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("token_hash"),
    )
    op.create_index("ix_refresh_family", "oauth_refresh_token", ["family"])


def downgrade() -> None:
    op.drop_index("ix_refresh_family", table_name="oauth_refresh_token")
    op.drop_table("oauth_refresh_token")
    op.drop_table("oauth_code")
    op.drop_table("oauth_client")
    op.drop_table("health_professional")
    op.drop_index("ix_insi_traits", table_name="insi_identity")
    op.drop_table("insi_identity")
