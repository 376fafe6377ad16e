"""Access: the access columns of each resource, the projection of the patient's choices,
emergency accesses and the notification outbox.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_KEY = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_ID = sa.String(length=64).with_variant(sa.String(length=64, collation="C"), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("resource") as batch:
        batch.add_column(sa.Column("patient_id", _ID, nullable=True))
        batch.add_column(sa.Column("category", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("masked", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))
        batch.add_column(sa.Column("hidden_from_patient", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))
    op.create_index("ix_resource_patient", "resource", ["patient_id", "resource_type"])
    _label_existing_resources()
    with op.batch_alter_table("binary_content") as batch:
        batch.add_column(sa.Column("document_id", _ID, nullable=True))
    op.create_table(
        "record_policy",
        sa.Column("patient_id", _ID, nullable=False),
        sa.Column("closed", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("emergency_opposed", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("care_team_objection", sa.Boolean(), nullable=False,
                  server_default=sa.false()),
        sa.Column("attending", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("patient_id"),
    )
    op.create_index("ix_record_policy_attending", "record_policy", ["attending"])
    # Every record has its policy row: the policy's SQL starts from it.
    op.execute("INSERT INTO record_policy (patient_id, closed, emergency_opposed, "
               "care_team_objection) SELECT resource_id, false, false, false FROM resource "
               "WHERE resource_type = 'Patient'")
    op.create_table(
        "record_actor",
        sa.Column("pk", _KEY, autoincrement=True, nullable=False),
        sa.Column("patient_id", _ID, nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("relation", sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("patient_id", "actor", "relation", name="uq_record_actor"),
    )
    op.create_index("ix_record_actor_actor", "record_actor", ["actor", "relation", "patient_id"])
    op.create_table(
        "emergency_access",
        sa.Column("pk", _KEY, autoincrement=True, nullable=False),
        sa.Column("patient_id", _ID, nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("granted_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("pk"),
    )
    op.create_index("ix_emergency_actor", "emergency_access",
                    ["actor", "patient_id", "expires_at"])
    op.create_table(
        "outbox_event",
        sa.Column("pk", _KEY, autoincrement=True, nullable=False),
        sa.Column("topic", sa.String(length=64), nullable=False),
        sa.Column("patient_id", _ID, nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("pk"),
    )
    op.create_index("ix_outbox_created", "outbox_event", ["created_at"])


_BATCH = 1000


def _label_existing_resources() -> None:
    """Give every stored resource its record and labels, as a write would have.

    Without it, patient data stored before this revision would have no record and
    no category, which the policy reads as directory data (open to every caller).
    This data migration reads the labelling rules of today's code (the access
    policy's ``labels_of``): the one place outside ``storage`` a migration uses.
    """
    import orjson

    from auth.policy import labels_of
    from storage.search.extract import patient_of

    resources = sa.table("resource", sa.column("pk", sa.BigInteger()),
                         sa.column("resource_type", sa.String()),
                         sa.column("resource_id", sa.String()),
                         sa.column("content", sa.LargeBinary()),
                         sa.column("patient_id", sa.String()), sa.column("category", sa.String()),
                         sa.column("masked", sa.Boolean()),
                         sa.column("hidden_from_patient", sa.Boolean()))
    versions = sa.table("resource_version", sa.column("resource_pk", sa.BigInteger()),
                        sa.column("version_id", sa.Integer()),
                        sa.column("content", sa.LargeBinary()))
    # A deleted resource is labelled by its last content: its history stays under the rules.
    last_content = (sa.select(versions.c.content)
                    .where(versions.c.resource_pk == resources.c.pk,
                           versions.c.content.is_not(None))
                    .order_by(versions.c.version_id.desc()).limit(1).scalar_subquery())
    connection = op.get_bind()
    last = 0
    while True:
        rows = connection.execute(
            sa.select(resources.c.pk, resources.c.resource_type, resources.c.resource_id,
                      sa.func.coalesce(resources.c.content, last_content))
            .where(resources.c.pk > last).order_by(resources.c.pk).limit(_BATCH)).all()
        if not rows:
            return
        updates = []
        for pk, resource_type, resource_id, content in rows:
            if content is None:
                continue
            resource = {**orjson.loads(content), "resourceType": resource_type,
                        "id": resource_id}
            labels = labels_of(resource)
            updates.append({"key": pk, "patient_id": patient_of(resource),
                            "category": labels.category, "masked": labels.masked,
                            "hidden_from_patient": labels.hidden_from_patient})
        if updates:
            connection.execute(
                resources.update().where(resources.c.pk == sa.bindparam("key"))
                .values(patient_id=sa.bindparam("patient_id"),
                        category=sa.bindparam("category"), masked=sa.bindparam("masked"),
                        hidden_from_patient=sa.bindparam("hidden_from_patient")), updates)
        last = rows[-1][0]


def downgrade() -> None:
    op.drop_index("ix_outbox_created", table_name="outbox_event")
    op.drop_table("outbox_event")
    op.drop_index("ix_emergency_actor", table_name="emergency_access")
    op.drop_table("emergency_access")
    op.drop_index("ix_record_actor_actor", table_name="record_actor")
    op.drop_table("record_actor")
    op.drop_index("ix_record_policy_attending", table_name="record_policy")
    op.drop_table("record_policy")
    op.drop_index("ix_resource_patient", table_name="resource")
    with op.batch_alter_table("binary_content") as batch:
        batch.drop_column("document_id")
    with op.batch_alter_table("resource") as batch:
        batch.drop_column("hidden_from_patient")
        batch.drop_column("masked")
        batch.drop_column("category")
        batch.drop_column("patient_id")
