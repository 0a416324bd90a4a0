"""The search configs shipped with ddsm, installed as the package data of ``ddsm.search_spaces``.

``ddsm quickstart`` and ``--space NAME`` (a shipped name such as ``digits``)
find them through :func:`ddsm.search.config.shipped_space`, in a source tree
and in an installed wheel alike.
"""
