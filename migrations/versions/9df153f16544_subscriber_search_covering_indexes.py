"""subscriber search: key and name indexes INCLUDE id on PostgreSQL

Revision ID: 9df153f16544
Revises: fd2bfeecaca5
Create Date: 2026-11-22 10:10:00.000000

A search reads its candidates (id, key) from the prefix indexes, and pages in key order walk the unique key
index, without visiting the table for each row (index-only scans). SQLite's indexes carry the rowid already:
nothing changes there. See docs/benchmarks.md "Audience".
"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '9df153f16544'
down_revision = 'fd2bfeecaca5'
branch_labels = None
depends_on = None


def _rebuild(include):
    """Recreate the three subscriber indexes with or without INCLUDE (id) (raw DDL: Alembic's stub tables lack id)."""
    extra = ' INCLUDE (id)' if include else ''
    op.drop_index('ix_subscribers_subscriber_key_pattern', table_name='subscribers')
    op.execute('CREATE INDEX ix_subscribers_subscriber_key_pattern ON subscribers '
               f'(subscriber_key text_pattern_ops){extra}')
    op.drop_index('ix_subscribers_display_name_lower_key', table_name='subscribers')
    op.execute('CREATE INDEX ix_subscribers_display_name_lower_key ON subscribers '
               f'(display_name_lower text_pattern_ops, subscriber_key){extra}')
    op.drop_constraint('uq_subscribers_subscriber_key', 'subscribers', type_='unique')
    op.execute(f'ALTER TABLE subscribers ADD CONSTRAINT uq_subscribers_subscriber_key UNIQUE (subscriber_key){extra}')


def upgrade():
    if op.get_bind().dialect.name == 'postgresql':
        _rebuild(include=True)


def downgrade():
    if op.get_bind().dialect.name == 'postgresql':
        _rebuild(include=False)
