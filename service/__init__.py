"""Carnet's service layer: the FastAPI application, FHIR use cases and the CLI."""
