"""Fault injection for the pipeline (``python -m tools.faults``; docs/faults.md).

Each fault kind is a case function ``case(rng, workdir)`` that makes the fault happen in a fresh
folder and returns when the pipeline survived it, or raises :class:`~tools.faults.common.NotSurvived`.
"""
