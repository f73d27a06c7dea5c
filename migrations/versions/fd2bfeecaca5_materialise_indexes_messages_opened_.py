"""materialise in index order: messages opened-recipient partial index, devices audience index

Revision ID: fd2bfeecaca5
Revises: 0fd09fc2792f
Create Date: 2026-11-22 09:00:00.000000

ix_messages_recipient (every message, in subscriber-key order) becomes a partial index of opened messages by
(campaign_id, recipient), which materialising never writes; ix_devices_app_status_platform becomes a covering
index in device id order for the audience query. See docs/benchmarks.md "Materialising 1M messages".
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'fd2bfeecaca5'
down_revision = '0fd09fc2792f'
branch_labels = None
depends_on = None

OPENED = sa.text('opened_at IS NOT NULL')


def upgrade():
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_index('ix_messages_recipient')
        batch_op.create_index('ix_messages_opened_recipient', ['campaign_id', 'recipient'], unique=False,
                              sqlite_where=OPENED, postgresql_where=OPENED)

    with op.batch_alter_table('devices', schema=None) as batch_op:
        batch_op.drop_index('ix_devices_app_status_platform')
        batch_op.create_index('ix_devices_audience', ['app_id', 'status', 'id', 'subscriber_id', 'platform'],
                              unique=False)


def downgrade():
    with op.batch_alter_table('devices', schema=None) as batch_op:
        batch_op.drop_index('ix_devices_audience')
        batch_op.create_index('ix_devices_app_status_platform', ['app_id', 'status', 'platform'], unique=False)

    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_index('ix_messages_opened_recipient', sqlite_where=OPENED, postgresql_where=OPENED)
        batch_op.create_index('ix_messages_recipient', ['recipient'], unique=False)
