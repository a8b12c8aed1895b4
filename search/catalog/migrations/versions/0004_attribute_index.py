"""attribute index: typed item attributes for filters, collections.write_version

Revision ID: 0004_attribute_index
Revises: 0003_lexical
Create Date: 2026-12-01
"""
import sqlalchemy as sa
from alembic import op

revision = '0004_attribute_index'
down_revision = '0003_lexical'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
BACKFILL_BATCH = 5000


def upgrade() -> None:
    op.create_table(
        'item_attributes',
        sa.Column('id', BigId, nullable=False, autoincrement=True),
        sa.Column('collection_id', sa.Integer(), nullable=False),
        sa.Column('item_id', BigId, nullable=False),
        sa.Column('key', sa.String(length=64), nullable=False),
        sa.Column('text_value', sa.String(length=1024), nullable=True),
        sa.Column('num_value', sa.Float(), nullable=True),
        sa.Column('bool_value', sa.Boolean(), nullable=True),
        sa.ForeignKeyConstraint(['collection_id'], ['collections.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['item_id'], ['items.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    for name, column in (('text', 'text_value'), ('num', 'num_value'),
                         ('bool', 'bool_value')):
        op.create_index(f'ix_item_attributes_{name}', 'item_attributes',
                        ['collection_id', 'key', column, 'item_id'])
    op.create_index('ix_item_attributes_item', 'item_attributes', ['item_id'])
    with op.batch_alter_table('collections') as batch:
        batch.add_column(sa.Column('write_version', sa.BigInteger(), nullable=False,
                                   server_default='0'))
    _backfill()


def _backfill() -> None:
    """Index the attributes of items that exist already, in id order, batch by batch."""
    from search.catalog.attributes import attribute_rows

    connection = op.get_bind()
    items = sa.table('items', sa.column('id'), sa.column('collection_id'),
                     sa.column('attributes', sa.JSON))
    target = sa.table('item_attributes', *(sa.column(c) for c in (
        'collection_id', 'item_id', 'key', 'text_value', 'num_value', 'bool_value')))
    last = 0
    while True:
        rows = connection.execute(
            sa.select(items.c.id, items.c.collection_id, items.c.attributes)
            .where(items.c.id > last).order_by(items.c.id).limit(BACKFILL_BATCH)).all()
        if not rows:
            return
        values = [r for item_id, cid, attrs in rows
                  for r in attribute_rows(cid, item_id, attrs or {})]
        if values:
            connection.execute(sa.insert(target), values)
        last = rows[-1][0]


def downgrade() -> None:
    with op.batch_alter_table('collections') as batch:
        batch.drop_column('write_version')
    op.drop_table('item_attributes')
