"""sms blocks, a stopped SMS fallback, apps.web_link_base

Revision ID: a9a018abf060
Revises: 9df153f16544
Create Date: 2026-11-23 09:00:00.000000

"""
from alembic import op
import sqlalchemy as sa
import webadmin.models.types


# revision identifiers, used by Alembic.
revision = 'a9a018abf060'
down_revision = '9df153f16544'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('sms_blocks',
    sa.Column('subscriber_id', sa.Integer(), nullable=False),
    sa.Column('phone', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.String(length=16), nullable=False),
    sa.Column('detail', sa.String(length=500), nullable=True),
    sa.Column('campaign_id', sa.Integer(), nullable=True),
    sa.Column('blocked_at', webadmin.models.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'], name=op.f('fk_sms_blocks_campaign_id_campaigns'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['subscriber_id'], ['subscribers.id'], name=op.f('fk_sms_blocks_subscriber_id_subscribers'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('subscriber_id', name=op.f('pk_sms_blocks'))
    )
    with op.batch_alter_table('campaigns', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sms_fallback_stopped_at', webadmin.models.types.UTCDateTime(timezone=True), nullable=True))
    with op.batch_alter_table('apps', schema=None) as batch_op:
        batch_op.add_column(sa.Column('web_link_base', sa.String(length=200), nullable=True))


def downgrade():
    with op.batch_alter_table('apps', schema=None) as batch_op:
        batch_op.drop_column('web_link_base')
    with op.batch_alter_table('campaigns', schema=None) as batch_op:
        batch_op.drop_column('sms_fallback_stopped_at')
    op.drop_table('sms_blocks')
