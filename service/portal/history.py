"""TODO(helper): portal section history."""

from fastapi import APIRouter

router = APIRouter()
