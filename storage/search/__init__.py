"""FHIR search: supported parameters, index extraction, parsing and SQL.

- ``parameters``: which search parameters each resource type supports, and
  how to pull index values out of a resource.
- ``criteria``: parse a FHIR query string into typed criteria.
- ``query``: turn criteria into one SQL statement (filters, sort, keyset paging).
"""
