"""The house model: emoji data build, contrastive training, and evaluation.

- `indexer.house.emoji` reads the npm packs (emoji-datasource-*, emojilib).
- `indexer.house.data` builds the training set and the shipped sample catalog.
- `indexer.house.train` trains or fine-tunes any open_clip encoder on image-caption pairs.
- `indexer.house.evaluate` measures retrieval recall.
"""
