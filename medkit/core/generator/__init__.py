"""The report generator shared by both modalities: language-model loading, knowledge fusion, decoding,
speculative drafts and the ONNX Runtime decoder."""
