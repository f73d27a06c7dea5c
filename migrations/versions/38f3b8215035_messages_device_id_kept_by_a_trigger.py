"""messages.device_id: a trigger on devices instead of a foreign key (an RI check per materialised row)

Revision ID: 38f3b8215035
Revises: 5970d2d12ebe
Create Date: 2026-12-04 18:20:00.000000

Deleting a device still leaves its messages with device_id NULL (as ON DELETE SET NULL did), now from a trigger
on devices; see webadmin.models.message.DEVICE_DELETED_DDL for why no row can be left pointing at a deleted device.
The statements are copied here so this migration keeps doing what it did when the model changes.

SQLite rebuilds the messages table to drop the constraint (a copy of the table: run it while nothing sends).
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '38f3b8215035'
down_revision = '5970d2d12ebe'
branch_labels = None
depends_on = None

DEVICE_LOCK = 0x6D736773

POSTGRESQL = [
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
    "DROP TRIGGER IF EXISTS trg_devices_messages_device_id",
    "CREATE TRIGGER trg_devices_messages_device_id AFTER DELETE ON devices FOR EACH ROW "
    "BEGIN UPDATE messages SET device_id = NULL WHERE device_id = old.id; END",
]


def upgrade():
    postgresql = op.get_bind().dialect.name == 'postgresql'
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_constraint('fk_messages_device_id_devices', type_='foreignkey')
    for statement in POSTGRESQL if postgresql else SQLITE:
        op.execute(statement)


def downgrade():
    if op.get_bind().dialect.name == 'postgresql':
        op.execute("DROP TRIGGER IF EXISTS trg_devices_messages_device_id ON devices")
        op.execute("DROP FUNCTION IF EXISTS messages_device_deleted()")
    else:
        op.execute("DROP TRIGGER IF EXISTS trg_devices_messages_device_id")
    # Messages of devices deleted since would break the constraint: they lose the reference, as SET NULL did.
    op.execute("UPDATE messages SET device_id = NULL WHERE device_id IS NOT NULL "
               "AND NOT EXISTS (SELECT 1 FROM devices WHERE devices.id = messages.device_id)")
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.create_foreign_key('fk_messages_device_id_devices', 'devices', ['device_id'], ['id'],
                                    ondelete='SET NULL')
