"""MedKit's chest X-ray path (2D): images, labeler, encoders, model, training, calibration, evaluation."""
