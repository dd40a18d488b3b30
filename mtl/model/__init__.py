"""The model itself: encoder and pooling, heads, the multi-task module and its losses. No Ray, no
files, no device choice."""
