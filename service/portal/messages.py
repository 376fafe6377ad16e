"""TODO(helper): portal section messages."""

from fastapi import APIRouter

router = APIRouter()
