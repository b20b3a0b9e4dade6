"""imaging reports: a free-text findings field beside the conclusion (the impression); ECG reports keep it empty

Revision ID: 0008
Revises: 0007
"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Versions signed before this revision had no findings; their signed content (kept verbatim
    # in signed_content) has no such key and still verifies as it was signed.
    with op.batch_alter_table('reports') as batch:
        batch.add_column(sa.Column('findings', sa.Text(), nullable=False, server_default=''))


def downgrade() -> None:
    with op.batch_alter_table('reports') as batch:
        batch.drop_column('findings')
