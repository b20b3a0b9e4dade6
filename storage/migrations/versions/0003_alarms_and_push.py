"""critical-value alarms, their events and push deliveries; rules per device and job; case priority

Revision ID: 0003
Revises: 0002
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('devices') as batch:
        batch.add_column(sa.Column('rules', sa.String(length=20), nullable=False, server_default='resting'))
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('rules', sa.String(length=20), nullable=True))
    with op.batch_alter_table('cases') as batch:
        batch.add_column(sa.Column('priority', sa.String(length=20), nullable=False, server_default='routine'))
    with op.batch_alter_table('sites') as batch:
        batch.add_column(sa.Column('webhook_url', sa.String(length=1000), nullable=True))
        batch.add_column(sa.Column('webhook_secret', sa.String(length=200), nullable=True))

    op.create_table('alarms',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('case_id', sa.Integer(), nullable=False),
    sa.Column('object_id', sa.Integer(), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('type', sa.String(length=40), nullable=False),
    sa.Column('severity', sa.String(length=20), nullable=False),
    sa.Column('start_s', sa.Double(), nullable=False),
    sa.Column('end_s', sa.Double(), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('text_zh', sa.Text(), nullable=False),
    sa.Column('evidence', sa.JSON(), nullable=False),
    sa.Column('raised_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('acknowledged_by', sa.String(length=200), nullable=True),
    sa.Column('acknowledged_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('escalation_level', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['case_id'], ['cases.id'], ),
    sa.ForeignKeyConstraint(['object_id'], ['stored_objects.id'], ),
    sa.ForeignKeyConstraint(['site_id'], ['sites.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_alarms_object_id', 'alarms', ['object_id'])
    op.create_index('ix_alarms_site_state', 'alarms', ['site_id', 'state'])
    op.create_index('ix_alarms_escalation', 'alarms', ['state', 'severity', 'escalation_level'])

    op.create_table('alarm_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('alarm_id', sa.Integer(), nullable=False),
    sa.Column('site_ids', sa.JSON(), nullable=False),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['alarm_id'], ['alarms.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('alarm_event_sites',
    sa.Column('event_id', sa.Integer(), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['event_id'], ['alarm_events.id'], ),
    sa.ForeignKeyConstraint(['site_id'], ['sites.id'], ),
    sa.PrimaryKeyConstraint('site_id', 'event_id')
    )
    op.create_table('deliveries',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('event_id', sa.Integer(), nullable=False),
    sa.Column('channel', sa.String(length=20), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['event_id'], ['alarm_events.id'], ),
    sa.ForeignKeyConstraint(['site_id'], ['sites.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('event_id', 'channel', 'site_id')
    )
    op.create_index('ix_deliveries_state_next', 'deliveries', ['state', 'next_attempt_at'])
    op.create_table('delivery_attempts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('delivery_id', sa.Integer(), nullable=False),
    sa.Column('attempted_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ok', sa.Boolean(), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('duration_ms', sa.Double(), nullable=False),
    sa.ForeignKeyConstraint(['delivery_id'], ['deliveries.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_delivery_attempts_delivery_id', 'delivery_attempts', ['delivery_id'])


def downgrade() -> None:
    op.drop_table('delivery_attempts')
    op.drop_table('deliveries')
    op.drop_table('alarm_event_sites')
    op.drop_table('alarm_events')
    op.drop_table('alarms')
    with op.batch_alter_table('sites') as batch:
        batch.drop_column('webhook_secret')
        batch.drop_column('webhook_url')
    with op.batch_alter_table('cases') as batch:
        batch.drop_column('priority')
    with op.batch_alter_table('jobs') as batch:
        batch.drop_column('rules')
    with op.batch_alter_table('devices') as batch:
        batch.drop_column('rules')
