"""lexical index: FTS5 / tsvector documents, vocabulary, identifiers; backfilled

Revision ID: 0003_lexical
Revises: 0002
Create Date: 2026-12-01
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.orm import Session

from search.catalog import lexical

revision = '0003_lexical'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('collections') as batch:
        batch.add_column(sa.Column('lexical', sa.JSON(), nullable=True))
    op.create_table('lexical_words',
    sa.Column('collection_id', sa.Integer(), nullable=False),
    sa.Column('word', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['collection_id'], ['collections.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('collection_id', 'word')
    )
    op.create_table('lexical_identifiers',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('collection_id', sa.Integer(), nullable=False),
    sa.Column('value', sa.String(length=512), nullable=False),
    sa.Column('item_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.ForeignKeyConstraint(['collection_id'], ['collections.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['item_id'], ['items.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_lexical_identifiers_value', 'lexical_identifiers',
                    ['collection_id', 'value'])
    op.create_index('ix_lexical_identifiers_item_id', 'lexical_identifiers', ['item_id'])
    connection = op.get_bind()
    lexical.create_schema(connection)
    # Existing collections become keyword-searchable at once, with the default settings.
    lexical.backfill(Session(bind=connection))


def downgrade() -> None:
    lexical.drop_schema(op.get_bind())
    op.drop_index('ix_lexical_identifiers_item_id', table_name='lexical_identifiers')
    op.drop_index('ix_lexical_identifiers_value', table_name='lexical_identifiers')
    op.drop_table('lexical_identifiers')
    op.drop_table('lexical_words')
    with op.batch_alter_table('collections') as batch:
        batch.drop_column('lexical')
