"""Concept proposal backends (registry). Importing this package registers the built-in ones."""

from medcbm.concepts.backends.base import (  # noqa: F401
    BACKENDS,
    Backend,
    BackendError,
    Candidate,
    Proposal,
    ProposalRequest,
    available_backends,
    get_backend,
    register_backend,
)
from medcbm.concepts.backends import extractive, openai_chat  # noqa: F401,E402
