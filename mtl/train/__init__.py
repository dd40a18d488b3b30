"""Training on Ray Train (``python -m jobs.train``): the driver (``trainer``), each worker's set-up,
step, objective and checkpoint, its streamed share of the data, run state and resume, distillation,
tuning and cross-validation."""
