"""the study catalog: what QIDO-RS and C-FIND match and return, on cases and stored objects, and its index

Objects stored before this revision keep NULL attributes (their bytes are in the object store,
which a migration does not read): they are still found by their UIDs, patient and modality.

Revision ID: 0006
Revises: 0005
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

_CASE_COLUMNS = (('study_date', sa.String(length=8)), ('study_time', sa.String(length=16)),
                 ('accession_number', sa.String(length=64)), ('study_description', sa.String(length=200)),
                 ('referring_physician_name', sa.String(length=200)), ('study_id', sa.String(length=64)))
_OBJECT_COLUMNS = (('series_number', sa.Integer()), ('series_description', sa.String(length=200)),
                   ('instance_number', sa.Integer()), ('rows', sa.Integer()), ('columns', sa.Integer()),
                   ('number_of_frames', sa.Integer()))
#: name -> (table, columns): a study's objects in series and instance order. An index costs
#: every C-STORE a page written, so this is the only one: a study by its UID and a patient by
#: PatientID are reached through the (site, UID) and (site, PatientID) unique indexes, one
#: probe per site (the catalog asks so), and ranges and texts (dates, accession numbers, names,
#: modalities) are matched on the cases the caller's scope selects.
_INDEXES = {
    'ix_stored_objects_case_series': ('stored_objects', ['case_id', 'series_instance_uid', 'instance_number']),
}


def upgrade() -> None:
    with op.batch_alter_table('cases') as batch:
        for name, type_ in _CASE_COLUMNS:
            batch.add_column(sa.Column(name, type_, nullable=True))
    with op.batch_alter_table('stored_objects') as batch:
        for name, type_ in _OBJECT_COLUMNS:
            batch.add_column(sa.Column(name, type_, nullable=True))
    for name, (table, columns) in _INDEXES.items():
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, (table, _) in _INDEXES.items():
        op.drop_index(name, table_name=table)
    with op.batch_alter_table('stored_objects') as batch:
        for name, _ in reversed(_OBJECT_COLUMNS):
            batch.drop_column(name)
    with op.batch_alter_table('cases') as batch:
        for name, _ in reversed(_CASE_COLUMNS):
            batch.drop_column(name)
