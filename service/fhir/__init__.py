"""The FHIR R4 REST API: thin routes over plain use-case functions."""
