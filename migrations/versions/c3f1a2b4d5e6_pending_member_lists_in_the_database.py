"""pending member lists in the database (a confirm may reach any web server)

Revision ID: c3f1a2b4d5e6
Revises: a9a018abf060
Create Date: 2026-12-04 05:00:00.000000

"""
from alembic import op
import sqlalchemy as sa
import webadmin.models.types


# revision identifiers, used by Alembic.
revision = 'c3f1a2b4d5e6'
down_revision = 'a9a018abf060'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('pending_member_lists',
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('group_id', sa.Integer(), nullable=False),
    sa.Column('owner_id', sa.Integer(), nullable=False),
    sa.Column('keys', sa.JSON(), nullable=False),
    sa.Column('created_at', webadmin.models.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['group_id'], ['groups.id'], name=op.f('fk_pending_member_lists_group_id_groups'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['owner_id'], ['users.id'], name=op.f('fk_pending_member_lists_owner_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('token_hash', name=op.f('pk_pending_member_lists'))
    )
    with op.batch_alter_table('pending_member_lists', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_pending_member_lists_created_at'), ['created_at'], unique=False)


def downgrade():
    with op.batch_alter_table('pending_member_lists', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_pending_member_lists_created_at'))
    op.drop_table('pending_member_lists')
