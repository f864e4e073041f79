"""Workflow fixtures: the audit tests' small real model (PH2 concept probes on 160 HAM10000 images), shared so the
guard and error tests reuse its cached features and fitted probes instead of training another."""

from tests.audit.conftest import audit_model, ham_own  # noqa: F401 - pytest finds fixtures by name here
