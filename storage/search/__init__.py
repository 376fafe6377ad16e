"""FHIR search: supported parameters, index extraction, parsing and SQL.

- ``parameters``: which search parameters each resource type supports (data).
- ``values``: text normalisation, date ranges, references: shared by both sides.
- ``extract``: the index values of a resource, written with it.
- ``criteria``: parse a FHIR query string into typed criteria.
- ``query``: criteria -> one SQL statement (filters, sort, keyset paging).
- ``shapes``: those statements compiled once per query shape; values bound per request.
"""
