"""64-bit message ids on PostgreSQL (a 32-bit key runs out after ~2,147 campaigns of 1M messages)

Revision ID: 5970d2d12ebe
Revises: d7e8f9a0b1c2
Create Date: 2026-12-04 18:10:00.000000

SQLite is unchanged: its INTEGER PRIMARY KEY is already the 64-bit rowid.

On PostgreSQL this rewrites `messages` and `message_related_objects` and their indexes under an ACCESS EXCLUSIVE
lock (minutes for tens of millions of rows): run it while no campaign is sending (docs/operations.md).
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '5970d2d12ebe'
down_revision = 'd7e8f9a0b1c2'
branch_labels = None
depends_on = None


def _retype(kind: str) -> None:
    old, new = (sa.Integer(), sa.BigInteger()) if kind == "bigint" else (sa.BigInteger(), sa.Integer())
    # The referencing column first, so the foreign key is rebuilt once, between columns of the same type.
    op.alter_column('message_related_objects', 'message_id', type_=new, existing_type=old, existing_nullable=False)
    op.alter_column('messages', 'id', type_=new, existing_type=old, existing_nullable=False)
    # A serial column's sequence is `AS integer` and stops at 2**31 - 1 whatever the column's type.
    op.execute(f"DO $$ BEGIN EXECUTE format('ALTER SEQUENCE %s AS {kind}', "
               f"pg_get_serial_sequence('messages', 'id')); END $$")


def upgrade():
    if op.get_bind().dialect.name == 'postgresql':
        _retype('bigint')


def downgrade():
    if op.get_bind().dialect.name == 'postgresql':
        _retype('integer')
