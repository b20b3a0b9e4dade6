"""users and sessions, the readers' queue (routing, deadlines, claims), reports, audit chain

Revision ID: 0004
Revises: 0003
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table('users',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('display_name', sa.String(length=200), nullable=False),
    sa.Column('password_hash', sa.String(length=200), nullable=False),
    sa.Column('role', sa.String(length=20), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('qualified', sa.String(length=40), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('failed_logins', sa.Integer(), nullable=False),
    sa.Column('locked_until', _TS, nullable=True),
    sa.Column('public_key', sa.String(length=100), nullable=True),
    sa.Column('private_key_enc', sa.Text(), nullable=True),
    sa.Column('created_at', _TS, nullable=False),
    sa.ForeignKeyConstraint(['site_id'], ['sites.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('username')
    )
    op.create_table('user_sessions',
    sa.Column('token_sha256', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('csrf_token', sa.String(length=64), nullable=False),
    sa.Column('address', sa.String(length=64), nullable=True),
    sa.Column('created_at', _TS, nullable=False),
    sa.Column('expires_at', _TS, nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ),
    sa.PrimaryKeyConstraint('token_sha256')
    )
    op.create_index('ix_user_sessions_user_id', 'user_sessions', ['user_id'])

    with op.batch_alter_table('cases') as batch:
        batch.add_column(sa.Column('route_site_id', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('deadline_at', _TS, nullable=True))
        batch.add_column(sa.Column('review_state', sa.String(length=20), nullable=False, server_default='open'))
        batch.add_column(sa.Column('claimed_by', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('claim_until', _TS, nullable=True))
        batch.create_foreign_key('fk_cases_route_site', 'sites', ['route_site_id'], ['id'])
        batch.create_foreign_key('fk_cases_claimed_by', 'users', ['claimed_by'], ['id'])
    # Cases received before the review stage existed go to their township's county.
    op.execute("UPDATE cases SET route_site_id = (SELECT COALESCE(s.parent_id, s.id) FROM sites s "
                "WHERE s.id = cases.site_id)")
    op.create_index('ix_cases_queue', 'cases', ['route_site_id', 'review_state', 'priority', 'deadline_at'])
    op.create_index('ix_cases_site_received', 'cases', ['site_id', 'received_at'])
    op.create_index('ix_cases_claimed_by', 'cases', ['claimed_by'])

    op.create_table('case_routes',
    sa.Column('case_id', sa.Integer(), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('reason', sa.String(length=20), nullable=False),
    sa.Column('at', _TS, nullable=False),
    sa.ForeignKeyConstraint(['case_id'], ['cases.id'], ),
    sa.ForeignKeyConstraint(['site_id'], ['sites.id'], ),
    sa.PrimaryKeyConstraint('case_id', 'site_id')
    )
    op.create_index('ix_case_routes_site_id', 'case_routes', ['site_id'])

    op.create_table('reports',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('case_id', sa.Integer(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('statements', sa.JSON(), nullable=False),
    sa.Column('conclusion', sa.Text(), nullable=False),
    sa.Column('measurements', sa.JSON(), nullable=False),
    sa.Column('author_id', sa.Integer(), nullable=False),
    sa.Column('replaces', sa.Integer(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('signed_by', sa.Integer(), nullable=True),
    sa.Column('signed_at', _TS, nullable=True),
    sa.Column('sha256', sa.String(length=64), nullable=True),
    sa.Column('signature', sa.String(length=200), nullable=True),
    sa.Column('signed_content', sa.Text(), nullable=True),
    sa.Column('pdf_key', sa.String(length=512), nullable=True),
    sa.Column('updated_at', _TS, nullable=False),
    sa.ForeignKeyConstraint(['case_id'], ['cases.id'], ),
    sa.ForeignKeyConstraint(['author_id'], ['users.id'], ),
    sa.ForeignKeyConstraint(['signed_by'], ['users.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('case_id', 'version')
    )
    op.create_index('ix_reports_case_id', 'reports', ['case_id'])

    op.create_table('audit_log',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('at', _TS, nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('username', sa.String(length=200), nullable=False),
    sa.Column('role', sa.String(length=20), nullable=False),
    sa.Column('action', sa.String(length=30), nullable=False),
    sa.Column('case_id', sa.Integer(), nullable=True),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.Column('address', sa.String(length=64), nullable=True),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_audit_log_case_id', 'audit_log', ['case_id'])
    op.create_table('audit_head',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('last_id', sa.Integer(), nullable=False),
    sa.Column('last_hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.execute("INSERT INTO audit_head (id, last_id, last_hash) VALUES (1, 0, '" + "0" * 64 + "')")


def downgrade() -> None:
    op.drop_table('audit_head')
    op.drop_index('ix_audit_log_case_id', table_name='audit_log')
    op.drop_table('audit_log')
    op.drop_index('ix_reports_case_id', table_name='reports')
    op.drop_table('reports')
    op.drop_index('ix_case_routes_site_id', table_name='case_routes')
    op.drop_table('case_routes')
    op.drop_index('ix_cases_claimed_by', table_name='cases')
    op.drop_index('ix_cases_site_received', table_name='cases')
    op.drop_index('ix_cases_queue', table_name='cases')
    with op.batch_alter_table('cases') as batch:
        batch.drop_constraint('fk_cases_claimed_by', type_='foreignkey')
        batch.drop_constraint('fk_cases_route_site', type_='foreignkey')
        for column in ('claim_until', 'claimed_by', 'review_state', 'deadline_at', 'route_site_id'):
            batch.drop_column(column)
    op.drop_index('ix_user_sessions_user_id', table_name='user_sessions')
    op.drop_table('user_sessions')
    op.drop_table('users')
