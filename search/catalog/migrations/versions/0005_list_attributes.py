"""attribute index: one row per scalar element of a list attribute (filters on lists)

Revision ID: 0005_list_attributes
Revises: 0004_attribute_index
Create Date: 2026-12-02
"""
import sqlalchemy as sa
from alembic import op

revision = '0005_list_attributes'
down_revision = '0004_attribute_index'
branch_labels = None
depends_on = None

BATCH = 5000


def upgrade() -> None:
    """Rewrite the attribute rows of existing items, batch by batch, in id order: lists
    were skipped before, so their elements get rows now."""
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
            .where(items.c.id > last).order_by(items.c.id).limit(BATCH)).all()
        if not rows:
            return
        with_lists = [(item_id, cid, attrs) for item_id, cid, attrs in rows
                      if any(isinstance(v, list) for v in (attrs or {}).values())]
        if with_lists:
            connection.execute(sa.delete(target).where(
                target.c.item_id.in_([item_id for item_id, _, _ in with_lists])))
            values = [r for item_id, cid, attrs in with_lists
                      for r in attribute_rows(cid, item_id, attrs)]
            if values:
                connection.execute(sa.insert(target), values)
        last = rows[-1][0]


def downgrade() -> None:
    """Nothing to undo: the element rows are harmless to the older code, which rewrites an
    item's rows on its next write anyway."""
