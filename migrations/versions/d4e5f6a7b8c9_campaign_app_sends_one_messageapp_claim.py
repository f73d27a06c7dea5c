"""campaign_app_sends: one claimed messageApp ("all users") request per campaign and Marketing Cloud message

Revision ID: d4e5f6a7b8c9
Revises: c3f1a2b4d5e6
Create Date: 2026-12-04 18:20:00.000000

"""
from alembic import op
import sqlalchemy as sa
import webadmin.models.types


# revision identifiers, used by Alembic.
revision = 'd4e5f6a7b8c9'
down_revision = 'c3f1a2b4d5e6'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('campaign_app_sends',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('campaign_id', sa.Integer(), nullable=False),
    sa.Column('target', sa.String(length=64), nullable=False),
    sa.Column('channel_id', sa.Integer(), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('claim_token', sa.String(length=36), nullable=False),
    sa.Column('claimed_by', sa.String(length=200), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('lease_until', webadmin.models.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('next_attempt_at', webadmin.models.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('provider_message_id', sa.String(length=200), nullable=True),
    sa.Column('error', sa.String(length=2000), nullable=True),
    sa.Column('created_at', webadmin.models.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', webadmin.models.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'], name=op.f('fk_campaign_app_sends_campaign_id_campaigns'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['channel_id'], ['channels.id'], name=op.f('fk_campaign_app_sends_channel_id_channels'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_campaign_app_sends')),
    sa.UniqueConstraint('campaign_id', 'target', name='uq_campaign_app_sends_campaign_id_target')
    )


def downgrade():
    op.drop_table('campaign_app_sends')
