"""Compatibility namespace: MoRAG's ``morag_core`` import paths, served by morag-progress.

Only ``morag_core.jobs`` is provided. It does not coexist with an installed MoRAG ``morag_core``.
"""
