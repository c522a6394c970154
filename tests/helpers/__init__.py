"""Helpers shared by the whole test suite (one place, imported by the tiers' conftest files)."""
