"""Casebridge: an integration broker carrying council cases between CRMs and line-of-business systems."""
