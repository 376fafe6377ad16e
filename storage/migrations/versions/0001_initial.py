"""Initial schema: resources, versions and search indexes.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('date_index',
    sa.Column('pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('resource_pk', sa.BigInteger(), nullable=False),
    sa.Column('resource_type', sa.String(length=64), nullable=False),
    sa.Column('param', sa.String(length=64), nullable=False),
    sa.Column('low', sa.BigInteger(), nullable=False),
    sa.Column('high', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('pk')
    )
    op.create_index('ix_date_lookup', 'date_index', ['resource_type', 'param', 'low', 'high'], unique=False)
    op.create_index('ix_date_resource', 'date_index', ['resource_pk'], unique=False)
    op.create_table('reference_index',
    sa.Column('pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('resource_pk', sa.BigInteger(), nullable=False),
    sa.Column('resource_type', sa.String(length=64), nullable=False),
    sa.Column('param', sa.String(length=64), nullable=False),
    sa.Column('target_type', sa.String(length=64), nullable=True),
    sa.Column('target_id', sa.String(length=1024), nullable=False),
    sa.PrimaryKeyConstraint('pk')
    )
    op.create_index('ix_reference_lookup', 'reference_index', ['resource_type', 'param', 'target_id', 'target_type'], unique=False)
    op.create_index('ix_reference_resource', 'reference_index', ['resource_pk'], unique=False)
    op.create_index('ix_reference_target', 'reference_index', ['target_type', 'target_id'], unique=False)
    op.create_table('resource',
    sa.Column('pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('resource_type', sa.String(length=64), nullable=False),
    sa.Column('resource_id', sa.String(length=64).with_variant(sa.String(length=64, collation='C'), 'postgresql'), nullable=False),
    sa.Column('version_id', sa.Integer(), nullable=False),
    sa.Column('last_updated', sa.BigInteger(), nullable=False),
    sa.Column('deleted', sa.Boolean(), nullable=False),
    sa.Column('content', sa.LargeBinary(), nullable=True),
    sa.PrimaryKeyConstraint('pk'),
    sa.UniqueConstraint('resource_type', 'resource_id', name='uq_resource_type_id')
    )
    op.create_index('ix_resource_type_updated', 'resource', ['resource_type', 'last_updated'], unique=False)
    op.create_table('resource_version',
    sa.Column('pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('resource_pk', sa.BigInteger(), nullable=False),
    sa.Column('resource_type', sa.String(length=64), nullable=False),
    sa.Column('resource_id', sa.String(length=64).with_variant(sa.String(length=64, collation='C'), 'postgresql'), nullable=False),
    sa.Column('version_id', sa.Integer(), nullable=False),
    sa.Column('last_updated', sa.BigInteger(), nullable=False),
    sa.Column('method', sa.String(length=8), nullable=False),
    sa.Column('content', sa.LargeBinary(), nullable=True),
    sa.PrimaryKeyConstraint('pk'),
    sa.UniqueConstraint('resource_pk', 'version_id', name='uq_version_resource_version')
    )
    op.create_index('ix_version_resource', 'resource_version', ['resource_type', 'resource_id', 'version_id'], unique=False)
    op.create_index('ix_version_type_updated', 'resource_version', ['resource_type', 'last_updated'], unique=False)
    op.create_table('string_index',
    sa.Column('pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('resource_pk', sa.BigInteger(), nullable=False),
    sa.Column('resource_type', sa.String(length=64), nullable=False),
    sa.Column('param', sa.String(length=64), nullable=False),
    sa.Column('normalized', sa.String(length=256).with_variant(sa.String(length=256, collation='C'), 'postgresql'), nullable=False),
    sa.Column('exact', sa.String(length=1024), nullable=False),
    sa.PrimaryKeyConstraint('pk')
    )
    op.create_index('ix_string_lookup', 'string_index', ['resource_type', 'param', 'normalized'], unique=False)
    op.create_index('ix_string_resource', 'string_index', ['resource_pk'], unique=False)
    op.create_table('token_index',
    sa.Column('pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('resource_pk', sa.BigInteger(), nullable=False),
    sa.Column('resource_type', sa.String(length=64), nullable=False),
    sa.Column('param', sa.String(length=64), nullable=False),
    sa.Column('system', sa.String(length=256), nullable=True),
    sa.Column('code', sa.String(length=256).with_variant(sa.String(length=256, collation='C'), 'postgresql'), nullable=False),
    sa.PrimaryKeyConstraint('pk')
    )
    op.create_index('ix_token_lookup', 'token_index', ['resource_type', 'param', 'code', 'system'], unique=False)
    op.create_index('ix_token_resource', 'token_index', ['resource_pk'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_token_resource', table_name='token_index')
    op.drop_index('ix_token_lookup', table_name='token_index')
    op.drop_table('token_index')
    op.drop_index('ix_string_resource', table_name='string_index')
    op.drop_index('ix_string_lookup', table_name='string_index')
    op.drop_table('string_index')
    op.drop_index('ix_version_type_updated', table_name='resource_version')
    op.drop_index('ix_version_resource', table_name='resource_version')
    op.drop_table('resource_version')
    op.drop_index('ix_resource_type_updated', table_name='resource')
    op.drop_table('resource')
    op.drop_index('ix_reference_target', table_name='reference_index')
    op.drop_index('ix_reference_resource', table_name='reference_index')
    op.drop_index('ix_reference_lookup', table_name='reference_index')
    op.drop_table('reference_index')
    op.drop_index('ix_date_resource', table_name='date_index')
    op.drop_index('ix_date_lookup', table_name='date_index')
    op.drop_table('date_index')
