"""MedKit."""
