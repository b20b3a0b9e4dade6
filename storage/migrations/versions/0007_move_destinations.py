"""C-MOVE destinations: a device's DICOM address (host and port), for the registered AE titles a C-MOVE may send to

Revision ID: 0007
Revises: 0006
"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('devices') as batch:
        batch.add_column(sa.Column('dicom_host', sa.String(length=255), nullable=True))
        batch.add_column(sa.Column('dicom_port', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('devices') as batch:
        batch.drop_column('dicom_port')
        batch.drop_column('dicom_host')
