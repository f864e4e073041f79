"""The PH2 dermoscopic criteria as binary concepts (the annotation vocabulary we can ground offline).

Manifest column for concept ``k`` is ``concept_<k>`` (0/1). Derived from the expert annotations in
``PH2_dataset.xlsx`` (Mendonça et al., IEEE EMBC 2013).
"""

from __future__ import annotations

# key -> (yes/no question, how it is derived from the sheet)
PH2_CONCEPTS: dict[str, tuple[str, str]] = {
    "asymmetry": ("Is the lesion asymmetric in shape or colour?", "Asymmetry in {1, 2}"),
    "asymmetry_full": ("Is the lesion asymmetric along both axes?", "Asymmetry == 2"),
    "pigment_network_atypical": ("Is there an atypical pigment network?", "Pigment Network == AT"),
    "dots_globules": ("Are there dots or globules?", "Dots/Globules in {AT, T}"),
    "dots_globules_atypical": ("Are there irregular, atypical dots or globules?", "Dots/Globules == AT"),
    "streaks": ("Are there streaks or pseudopods at the periphery?", "Streaks == P"),
    "regression_areas": ("Are there regression structures (white scar-like or blue-grey peppering areas)?", "Regression Areas == P"),
    "blue_whitish_veil": ("Is there a blue-whitish veil?", "Blue-Whitish Veil == P"),
    "color_white": ("Is there white colour in the lesion?", "White == X"),
    "color_red": ("Is there red colour in the lesion?", "Red == X"),
    "color_light_brown": ("Is there light-brown colour in the lesion?", "Light-Brown == X"),
    "color_dark_brown": ("Is there dark-brown colour in the lesion?", "Dark-Brown == X"),
    "color_blue_gray": ("Is there blue-grey colour in the lesion?", "Blue-Gray == X"),
    "color_black": ("Is there black colour in the lesion?", "Black == X"),
}

# Whole-lesion pattern concepts from the PH2 clinical diagnosis (expert dermoscopic judgement of the whole
# lesion, not histology). A separate concept source: the criteria above describe parts of the lesion;
# these describe its overall look, and transfer between sites better than any single criterion.
PH2_PATTERN_CONCEPTS: dict[str, tuple[str, str]] = {
    "melanoma_pattern": ("Does the lesion as a whole look like a melanoma to a dermoscopist?",
                         "Clinical Diagnosis == Melanoma"),
    "atypical_pattern": ("Does the lesion look atypical (atypical nevus or melanoma) rather than a common nevus?",
                         "Clinical Diagnosis in {Atypical Nevus, Melanoma}"),
}

CONCEPT_PREFIX = "concept_"
