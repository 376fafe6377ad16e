"""Persistence for Carnet: tables, repositories, search indexes.

Nothing here imports the rest of Carnet; the service layer calls in.
"""
