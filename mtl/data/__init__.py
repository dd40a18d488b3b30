"""Text to model inputs: readers of labeled data, THE preprocessing (``features``), task mixing and
augmentation. Shared by training, labeling and serving."""
