"""Audit predictions by clinical concept: cited explanations, interventions, site drift, offline reports.

``explain`` / ``intervene`` / ``intervention_curves`` return data; ``write_audit_report`` writes a self-contained
HTML file, a JSON file with a versioned schema and a model card (``medcbm audit``).
"""

from medcbm.audit.explain import CaseExplanation, ConceptExplanation, explain, explain_from_concepts
from medcbm.audit.interventions import (concept_ablation, intervene, intervene_concepts, intervention_curves,
                                        normalised_auc, what_if)

__all__ = ["CaseExplanation", "ConceptExplanation", "concept_ablation", "explain", "explain_from_concepts",
           "intervene", "intervene_concepts", "intervention_curves", "normalised_auc", "what_if",
           "write_audit_report"]


def __getattr__(name: str):
    if name == "write_audit_report":  # lazy: the report pulls in features, matplotlib and jinja2
        from medcbm.audit.report import write_audit_report

        return write_audit_report
    raise AttributeError(name)
