"""FHIR validation: the base R4 structure (fhir.resources) and, as data, the
French profiles and code lists that later issues add (INS, PDSm, access matrix).

Nothing here imports the rest of Carnet.
"""
