"""xmodal's engine: CLIP encoders, FAISS vector index, SQL catalog and the query engine."""
