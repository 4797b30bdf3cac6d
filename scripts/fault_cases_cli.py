"""Fault cases of the command line: outputs equal to inputs, numbers, options, resources.

Registered with :func:`fault_cases.case`; run by ``scripts/fault_cases.py``.
"""

from __future__ import annotations
