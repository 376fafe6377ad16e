"""``carnet simulate``: synthetic professional traffic against a Carnet server."""
