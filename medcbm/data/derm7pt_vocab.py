"""The Derm7pt 7-point-checklist criteria as binary concepts, and its diagnoses as labels.

Manifest column for concept ``k`` is ``concept_<k>`` (0/1, prefix shared with :mod:`medcbm.data.ph2_vocab`).
Derived from the categorical criteria of Derm7pt's ``meta.csv`` (Kawahara et al., IEEE JBHI 2019).

Naming: a concept reuses a PH2 key only when PH2 annotates the same finding with the same cut
(positive = the same criterion values), because a concept of the same name is treated as one concept
across datasets. Shared: ``pigment_network_atypical``, ``streaks`` / ``dots_globules`` / ``regression_areas``
(any form present: PH2 grades them only absent/present or counts both grades), ``dots_globules_atypical``
(the checklist's "irregular dots/globules" = PH2's "atypical" grade) and ``blue_whitish_veil``. The
regular/irregular splits PH2 does not make get distinct names (``streaks_irregular``, ...). The any-form
concepts overlap their splits on purpose: generic bank concepts ("streaks", "dots/globules") ground to them.

Dropped: ``vascular_structures == wreath`` (2 positives in 1,011 cases, too few to fit or evaluate a
concept probe: the rule is at least 5 positives) and ``pigmentation == localized regular`` as its own
concept (3 positives; it is folded into ``pigmentation_regular``). Both values are still accepted.
"""

from __future__ import annotations

from medcbm.data.ph2_vocab import CONCEPT_PREFIX, PH2_CONCEPTS, PH2_PATTERN_CONCEPTS

# meta.csv criterion column -> every value the release uses (anything else is a DataError)
DERM7PT_CRITERIA: dict[str, tuple[str, ...]] = {
    "pigment_network": ("absent", "typical", "atypical"),
    "streaks": ("absent", "regular", "irregular"),
    "pigmentation": ("absent", "diffuse regular", "localized regular", "diffuse irregular", "localized irregular"),
    "regression_structures": ("absent", "blue areas", "white areas", "combinations"),
    "dots_and_globules": ("absent", "regular", "irregular"),
    "blue_whitish_veil": ("absent", "present"),
    "vascular_structures": ("absent", "arborizing", "comma", "hairpin", "dotted", "within regression",
                            "linear irregular", "wreath"),
}

# concept key -> (criterion column, values that make it 1). "combinations" in regression_structures
# means blue and white regression areas together, so it counts for both regression_blue and _white.
DERM7PT_RULES: dict[str, tuple[str, frozenset[str]]] = {
    "pigment_network_typical": ("pigment_network", frozenset({"typical"})),
    "pigment_network_atypical": ("pigment_network", frozenset({"atypical"})),
    "streaks": ("streaks", frozenset({"regular", "irregular"})),
    "streaks_regular": ("streaks", frozenset({"regular"})),
    "streaks_irregular": ("streaks", frozenset({"irregular"})),
    "pigmentation_regular": ("pigmentation", frozenset({"diffuse regular", "localized regular"})),
    "pigmentation_irregular": ("pigmentation", frozenset({"diffuse irregular", "localized irregular"})),
    "regression_areas": ("regression_structures", frozenset({"blue areas", "white areas", "combinations"})),
    "regression_blue": ("regression_structures", frozenset({"blue areas", "combinations"})),
    "regression_white": ("regression_structures", frozenset({"white areas", "combinations"})),
    "dots_globules": ("dots_and_globules", frozenset({"regular", "irregular"})),
    "dots_globules_regular": ("dots_and_globules", frozenset({"regular"})),
    "dots_globules_atypical": ("dots_and_globules", frozenset({"irregular"})),
    "blue_whitish_veil": ("blue_whitish_veil", frozenset({"present"})),
    "vascular_arborizing": ("vascular_structures", frozenset({"arborizing"})),
    "vascular_comma": ("vascular_structures", frozenset({"comma"})),
    "vascular_hairpin": ("vascular_structures", frozenset({"hairpin"})),
    "vascular_dotted": ("vascular_structures", frozenset({"dotted"})),
    "vascular_linear_irregular": ("vascular_structures", frozenset({"linear irregular"})),
    "vascular_within_regression": ("vascular_structures", frozenset({"within regression"})),
}

SHARED_WITH_PH2 = ("pigment_network_atypical", "streaks", "regression_areas", "dots_globules", "dots_globules_atypical",
                   "blue_whitish_veil")

_QUESTIONS = {
    "pigment_network_typical": "Is there a typical, regular pigment network (thin lines, evenly spaced holes)?",
    "streaks_regular": "Are there regular streaks or pseudopods symmetrically around the whole lesion (starburst)?",
    "streaks_irregular": "Are there irregular streaks or pseudopods unevenly distributed at the periphery?",
    "pigmentation_regular": "Is there regular, evenly distributed structureless pigmentation (blotches)?",
    "pigmentation_irregular": "Is there irregular structureless pigmentation (irregular blotches)?",
    "regression_blue": "Are there blue regression areas (blue-grey peppering, granules)?",
    "regression_white": "Are there white regression areas (white scar-like depigmentation)?",
    "dots_globules_regular": "Are there regular dots or globules, even in size and distribution?",
    "vascular_arborizing": "Are there arborizing (tree-like branching) vessels?",
    "vascular_comma": "Are there comma-shaped vessels?",
    "vascular_hairpin": "Are there hairpin (looped) vessels?",
    "vascular_dotted": "Are there dotted (pinpoint) vessels?",
    "vascular_linear_irregular": "Are there linear irregular vessels?",
    "vascular_within_regression": "Are there vessels within regression structures?",
}
# shared keys take PH2's question verbatim, so the two datasets literally ask the same thing
_QUESTIONS.update({k: PH2_CONCEPTS[k][0] for k in SHARED_WITH_PH2})


def _derivation(column: str, values: frozenset[str]) -> str:
    return f"{column} == {next(iter(values))}" if len(values) == 1 else f"{column} in {{{', '.join(sorted(values))}}}"


# key -> (yes/no question, how it is derived from meta.csv), same shape as PH2_CONCEPTS
DERM7PT_CONCEPTS: dict[str, tuple[str, str]] = {
    k: (_QUESTIONS[k], _derivation(col, vals)) for k, (col, vals) in DERM7PT_RULES.items()
}

MELANOMA_DIAGNOSES = ("melanoma", "melanoma (in situ)", "melanoma (less than 0.76 mm)", "melanoma (0.76 to 1.5 mm)",
                      "melanoma (more than 1.5 mm)", "melanoma metastasis")

# meta.csv diagnosis -> label slug; the melanoma thickness/stage variants merge into one label
# (the raw value stays in the manifest's ``diagnosis`` column)
DERM7PT_DIAGNOSES: dict[str, str] = {
    **{d: "melanoma" for d in MELANOMA_DIAGNOSES},
    "basal cell carcinoma": "basal_cell_carcinoma",
    "clark nevus": "clark_nevus",
    "reed or spitz nevus": "reed_spitz_nevus",
    "seborrheic keratosis": "seborrheic_keratosis",
    "dermal nevus": "dermal_nevus",
    "vascular lesion": "vascular_lesion",
    "blue nevus": "blue_nevus",
    "lentigo": "lentigo",
    "dermatofibroma": "dermatofibroma",
    "congenital nevus": "congenital_nevus",
    "melanosis": "melanosis",
    "combined nevus": "combined_nevus",
    "miscellaneous": "miscellaneous",
    "recurrent nevus": "recurrent_nevus",
}

# Malignant = melanoma (all variants) and basal cell carcinoma. Everything else is benign: Reed/Spitz
# nevi are benign melanocytic tumours (excised as melanoma mimics, but not malignant), seborrheic
# keratosis, lentigo, melanosis, dermatofibroma and vascular lesions are benign. "miscellaneous" (8 cases)
# is unspecified in the release; Kawahara et al. group it with the benign MISC class, so it is 0 here
# (filter on ``label`` to leave it out).
MALIGNANT_LABELS = frozenset({"melanoma", "basal_cell_carcinoma"})

# Whole-lesion pattern concepts from the expert diagnosis (a dermoscopist's pattern analysis of the whole lesion),
# like PH2's (``PH2_PATTERN_CONCEPTS``): the 7-point criteria describe parts of melanocytic lesions; these say
# what the lesion as a whole looks like, including the non-melanocytic types the criteria cannot describe.
# ``melanoma_pattern`` is PH2's concept (same question), so the two datasets train one probe for it.
# key -> (question, label slugs that make it 1)
DERM7PT_PATTERNS: dict[str, tuple[str, frozenset[str]]] = {
    "melanoma_pattern": (PH2_PATTERN_CONCEPTS["melanoma_pattern"][0], frozenset({"melanoma"})),
    "bcc_pattern": ("Does the lesion as a whole look like a basal cell carcinoma to a dermoscopist?",
                    frozenset({"basal_cell_carcinoma"})),
    "keratosis_pattern": ("Does the lesion look like a seborrheic keratosis or solar lentigo (a benign keratinocytic "
                          "or flat pigmented lesion)?", frozenset({"seborrheic_keratosis", "lentigo", "melanosis"})),
    "vascular_lesion_pattern": ("Does the lesion look like a vascular lesion (red-blue lacunae)?",
                                frozenset({"vascular_lesion"})),
    "dermatofibroma_pattern": ("Does the lesion look like a dermatofibroma (central white patch, delicate "
                               "peripheral network)?", frozenset({"dermatofibroma"})),
}
DERM7PT_PATTERN_CONCEPTS: dict[str, tuple[str, str]] = {
    k: (q, f"label in {{{', '.join(sorted(v))}}}") for k, (q, v) in DERM7PT_PATTERNS.items()
}

__all__ = ["CONCEPT_PREFIX", "DERM7PT_CONCEPTS", "DERM7PT_PATTERNS", "DERM7PT_PATTERN_CONCEPTS", "DERM7PT_CRITERIA", "DERM7PT_DIAGNOSES", "DERM7PT_RULES",
           "MALIGNANT_LABELS", "MELANOMA_DIAGNOSES", "SHARED_WITH_PH2"]
