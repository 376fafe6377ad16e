"""Alembic environment: Carnet runs migrations on a connection it already holds."""

from alembic import context
from sqlmodel import SQLModel

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=SQLModel.metadata,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
