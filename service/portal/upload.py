"""TODO(helper): portal section upload."""

from fastapi import APIRouter

router = APIRouter()
