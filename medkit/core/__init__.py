"""MedKit's shared core: what both modalities use. Imports no modality (medkit.cxr, medkit.ct)."""
