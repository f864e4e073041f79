"""Concept grounding: strategies that turn image features into calibrated concept probabilities."""

from medcbm.concepts.grounding.base import ConceptGrounder, check_features
from medcbm.concepts.grounding.probes import ConceptProbes
from medcbm.concepts.grounding.reports import fit_report_probes, label_agreement, pseudo_label_reports
from medcbm.concepts.grounding.vlm import VLMConceptGrounder

__all__ = ["ConceptGrounder", "ConceptProbes", "VLMConceptGrounder", "check_features", "fit_report_probes",
           "label_agreement", "pseudo_label_reports"]
