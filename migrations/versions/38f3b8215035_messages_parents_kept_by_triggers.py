"""messages.campaign_id / device_id: triggers on the parents instead of foreign keys

Revision ID: 38f3b8215035
Revises: 5970d2d12ebe
Create Date: 2026-12-04 18:20:00.000000

Deleting a campaign still deletes its messages (ON DELETE CASCADE did) and deleting a device still leaves its
messages with device_id NULL (ON DELETE SET NULL did), now from triggers on campaigns and devices; see
webadmin.models.message.PARENT_TRIGGERS_DDL for why no row can be left pointing at a deleted one. The statements
are copied here so this migration keeps doing what it did when the model changes.

SQLite rebuilds the messages table to drop the constraints (a copy of the table: run it while nothing sends).
"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '38f3b8215035'
down_revision = '5970d2d12ebe'
branch_labels = None
depends_on = None

DEVICE_LOCK = 0x6D736773

POSTGRESQL = [
    """CREATE OR REPLACE FUNCTION messages_campaign_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM messages WHERE campaign_id IN (SELECT id FROM deleted_campaigns);
    RETURN NULL;
END
$$""",
    "DROP TRIGGER IF EXISTS trg_campaigns_messages_campaign_id ON campaigns",
    "CREATE TRIGGER trg_campaigns_messages_campaign_id AFTER DELETE ON campaigns "
    "REFERENCING OLD TABLE AS deleted_campaigns FOR EACH STATEMENT EXECUTE FUNCTION messages_campaign_deleted()",
    f"""CREATE OR REPLACE FUNCTION messages_device_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock({DEVICE_LOCK}, app_id)
        FROM (SELECT DISTINCT app_id FROM deleted_devices ORDER BY app_id) AS apps;
    UPDATE messages SET device_id = NULL WHERE device_id IN (SELECT id FROM deleted_devices);
    RETURN NULL;
END
$$""",
    "DROP TRIGGER IF EXISTS trg_devices_messages_device_id ON devices",
    "CREATE TRIGGER trg_devices_messages_device_id AFTER DELETE ON devices "
    "REFERENCING OLD TABLE AS deleted_devices FOR EACH STATEMENT EXECUTE FUNCTION messages_device_deleted()",
]
SQLITE = [
    "DROP TRIGGER IF EXISTS trg_campaigns_messages_campaign_id",
    "CREATE TRIGGER trg_campaigns_messages_campaign_id AFTER DELETE ON campaigns FOR EACH ROW "
    "BEGIN DELETE FROM messages WHERE campaign_id = old.id; END",
    "DROP TRIGGER IF EXISTS trg_devices_messages_device_id",
    "CREATE TRIGGER trg_devices_messages_device_id AFTER DELETE ON devices FOR EACH ROW "
    "BEGIN UPDATE messages SET device_id = NULL WHERE device_id = old.id; END",
]
DROP = {
    "postgresql": [
        "DROP TRIGGER IF EXISTS trg_campaigns_messages_campaign_id ON campaigns",
        "DROP FUNCTION IF EXISTS messages_campaign_deleted()",
        "DROP TRIGGER IF EXISTS trg_devices_messages_device_id ON devices",
        "DROP FUNCTION IF EXISTS messages_device_deleted()",
    ],
    "sqlite": [
        "DROP TRIGGER IF EXISTS trg_campaigns_messages_campaign_id",
        "DROP TRIGGER IF EXISTS trg_devices_messages_device_id",
    ],
}


def upgrade():
    postgresql = op.get_bind().dialect.name == 'postgresql'
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_constraint('fk_messages_campaign_id_campaigns', type_='foreignkey')
        batch_op.drop_constraint('fk_messages_device_id_devices', type_='foreignkey')
    for statement in POSTGRESQL if postgresql else SQLITE:
        op.execute(statement)


def downgrade():
    for statement in DROP[op.get_bind().dialect.name]:
        op.execute(statement)
    # Rows whose parent went while there was no constraint: what the constraints' ON DELETE would have done.
    op.execute("DELETE FROM messages WHERE campaign_id IS NOT NULL "
               "AND NOT EXISTS (SELECT 1 FROM campaigns WHERE campaigns.id = messages.campaign_id)")
    op.execute("UPDATE messages SET device_id = NULL WHERE device_id IS NOT NULL "
               "AND NOT EXISTS (SELECT 1 FROM devices WHERE devices.id = messages.device_id)")
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.create_foreign_key('fk_messages_campaign_id_campaigns', 'campaigns', ['campaign_id'], ['id'],
                                    ondelete='CASCADE')
        batch_op.create_foreign_key('fk_messages_device_id_devices', 'devices', ['device_id'], ['id'],
                                    ondelete='SET NULL')
