"""Bridges from ddsm supernets and schedule files to other libraries.

Each bridge imports its library lazily, so ddsm itself never depends on it:
``ddsm.integrations.diffusers`` runs a supernet with a per-step width schedule
inside a standard diffusers scheduler loop (``pip install diffusers``).
"""
