"""The record of tests/service/access (a patient, her doctors and their relations) serves
the summary's tests too."""

from tests.service.access.conftest import as_patient, record

__all__ = ["as_patient", "record"]
