"""indexes the case lists need: alarms by case, cases newest first

Revision ID: 0009
Revises: 0008
"""
from alembic import op


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Every list request fetches the alarms of its page's cases; without this it scans them all.
    op.create_index('ix_alarms_case_id', 'alarms', ['case_id'])
    # Clinic and quality-control lists are newest first: the index gives the page without a sort.
    op.create_index('ix_cases_received', 'cases', ['received_at', 'id'])


def downgrade() -> None:
    op.drop_index('ix_cases_received', table_name='cases')
    op.drop_index('ix_alarms_case_id', table_name='alarms')
