"""A trained model, used: the model folder, THE Predictor (torch or ONNX Runtime), the answers it
gives, the ONNX export, the model card and the reference statistics. No Ray."""
