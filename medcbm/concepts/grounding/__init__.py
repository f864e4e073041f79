"""Concept grounding: strategies that turn image features into calibrated concept probabilities."""

from medcbm.concepts.grounding.base import GROUNDERS, ConceptGrounder, check_features, grounder_from_state
from medcbm.concepts.grounding.compose import ConceptUnion, ProjectedGrounder
from medcbm.concepts.grounding.probes import ConceptProbes
from medcbm.concepts.grounding.reports import fit_report_probes, label_agreement, pseudo_label_reports
from medcbm.concepts.grounding.vlm import VLMConceptGrounder

__all__ = ["GROUNDERS", "ConceptGrounder", "ConceptProbes", "ConceptUnion", "ProjectedGrounder", "VLMConceptGrounder",
           "check_features", "fit_report_probes", "grounder_from_state", "label_agreement", "pseudo_label_reports"]
