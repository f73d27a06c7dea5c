"""campaigns.possibly_resent: messages sent again after a claim that left no outcome (shown on the campaign page)

Revision ID: e7c1d2f3a4b5
Revises: d4e5f6a7b8c9
Create Date: 2026-12-04 18:30:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'e7c1d2f3a4b5'
down_revision = 'd4e5f6a7b8c9'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('campaigns', schema=None) as batch_op:
        batch_op.add_column(sa.Column('possibly_resent', sa.Integer(), nullable=False, server_default=sa.text('0')))


def downgrade():
    with op.batch_alter_table('campaigns', schema=None) as batch_op:
        batch_op.drop_column('possibly_resent')
