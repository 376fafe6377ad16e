"""TODO(helper): portal section privacy."""

from fastapi import APIRouter

router = APIRouter()
