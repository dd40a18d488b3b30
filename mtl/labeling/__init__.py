"""Bulk labeling on Ray Data (``python -m jobs.label``): a corpus in, one Parquet row out per input
row, with embeddings, labels and entities; resumable, and never mixing two attempts' rows."""
