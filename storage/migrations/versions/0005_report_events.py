"""signed reports pushed to the clinic like alarms: report events (no alarm), the clinic's acknowledgement

Revision ID: 0005
Revises: 0004
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table('alarm_events') as batch:
        batch.alter_column('alarm_id', existing_type=sa.Integer(), nullable=True)
        batch.add_column(sa.Column('case_id', sa.Integer(), nullable=True))
        batch.create_foreign_key('fk_alarm_events_case_id', 'cases', ['case_id'], ['id'])
        batch.create_index('ix_alarm_events_case_id', ['case_id'])
    # Events written before this revision are all about an alarm: their case is the alarm's.
    op.execute("UPDATE alarm_events SET case_id = (SELECT a.case_id FROM alarms a WHERE a.id = alarm_events.alarm_id)")

    with op.batch_alter_table('reports') as batch:
        batch.add_column(sa.Column('acknowledged_by', sa.String(length=200), nullable=True))
        batch.add_column(sa.Column('acknowledged_at', _TS, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('reports') as batch:
        batch.drop_column('acknowledged_at')
        batch.drop_column('acknowledged_by')
    # Report events have no alarm: they (and their deliveries) cannot outlive the column's NOT NULL.
    report_events = "SELECT id FROM alarm_events WHERE alarm_id IS NULL"
    op.execute("DELETE FROM delivery_attempts WHERE delivery_id IN "
               f"(SELECT id FROM deliveries WHERE event_id IN ({report_events}))")
    op.execute(f"DELETE FROM deliveries WHERE event_id IN ({report_events})")
    op.execute(f"DELETE FROM alarm_event_sites WHERE event_id IN ({report_events})")
    op.execute("DELETE FROM alarm_events WHERE alarm_id IS NULL")
    with op.batch_alter_table('alarm_events') as batch:
        batch.drop_index('ix_alarm_events_case_id')
        batch.drop_constraint('fk_alarm_events_case_id', type_='foreignkey')
        batch.drop_column('case_id')
        batch.alter_column('alarm_id', existing_type=sa.Integer(), nullable=False)
