"""demo loads: the running dashboard demo load and its progress (any web process and the worker see it)

Revision ID: d7e8f9a0b1c2
Revises: e7c1d2f3a4b5
Create Date: 2026-12-04 18:30:00.000000

"""
from alembic import op
import sqlalchemy as sa
import webadmin.models.types


# revision identifiers, used by Alembic.
revision = 'd7e8f9a0b1c2'
down_revision = 'e7c1d2f3a4b5'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('demo_loads',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('slot', sa.Integer(), nullable=True),
    sa.Column('actor_id', sa.Integer(), nullable=True),
    sa.Column('actor', sa.String(length=254), nullable=False),
    sa.Column('only', sa.String(length=32), nullable=True),
    sa.Column('loader', sa.String(length=32), nullable=True),
    sa.Column('step', sa.Integer(), nullable=False),
    sa.Column('steps', sa.Integer(), nullable=False),
    sa.Column('report', sa.Text(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', webadmin.models.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('started_at', webadmin.models.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('finished_at', webadmin.models.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('updated_at', webadmin.models.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['actor_id'], ['users.id'], name=op.f('fk_demo_loads_actor_id_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_demo_loads')),
    sa.UniqueConstraint('slot', name=op.f('uq_demo_loads_slot'))
    )
    with op.batch_alter_table('demo_loads', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_demo_loads_created_at'), ['created_at'], unique=False)


def downgrade():
    with op.batch_alter_table('demo_loads', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_demo_loads_created_at'))
    op.drop_table('demo_loads')
