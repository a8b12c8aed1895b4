"""The house model: emoji data build, contrastive training, and evaluation.

- `search.house.emoji` reads the npm packs (emoji-datasource-*, emojilib).
- `search.house.data` builds the training set and the shipped sample catalog.
- `search.house.train` trains or fine-tunes any open_clip encoder on image-caption pairs.
- `search.house.evaluate` measures retrieval recall.
"""
