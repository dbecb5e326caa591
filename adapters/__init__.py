"""Adapter plugins shipped with Casebridge. Each subpackage is one LOB system; they never import each other."""
