"""Restore: the plan, the foreign-key graph and load order, natural and generic keys,
loading, replay, the record of what a target holds, and verify."""
