"""Documents the IHE MHD way (ITI-65/66/67/68) with the French PDSm rules.

``binaries``: document bytes in the blob store, streamed in and out.
``filing``: what ITI-65 checks beyond each resource's profile (bytes, patient,
replacement, idempotency). ``metadata``: which changes a filed document may take.
``gc``: removing blobs that no Binary references.
"""
