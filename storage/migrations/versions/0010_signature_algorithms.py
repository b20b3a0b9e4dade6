"""signature algorithms: each reader's key and each signature records its own (ed25519, sm2)

Revision ID: 0010
Revises: 0009
"""
import sqlalchemy as sa
from alembic import op


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('users') as batch:
        batch.add_column(sa.Column('key_algorithm', sa.String(20)))
    with op.batch_alter_table('reports') as batch:
        batch.add_column(sa.Column('signature_algorithm', sa.String(20)))
    # Every key and signature made before this revision is Ed25519.
    op.execute("UPDATE users SET key_algorithm = 'ed25519' WHERE public_key IS NOT NULL")
    op.execute("UPDATE reports SET signature_algorithm = 'ed25519' WHERE signature IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table('reports') as batch:
        batch.drop_column('signature_algorithm')
    with op.batch_alter_table('users') as batch:
        batch.drop_column('key_algorithm')
