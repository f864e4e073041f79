"""Negation-aware matching on written cases and on the real chest X-ray clinical notes."""

from __future__ import annotations

from medcbm.concepts.alignment import cxr_notes_vocab, load_clinical_notes
from medcbm.concepts.negation import find_mentions, label_text, sentence_spans


def test_pre_and_post_triggers_are_scoped_to_the_clause():
    text = ("No pleural effusion. Bilateral consolidation is seen, but pneumothorax was ruled out; "
            "a pneumothorax is absent. Resolution of consolidation and residual peripheral opacity.")
    ms = find_mentions(text, {"pleural effusion": ["effusion"], "consolidation": [], "pneumothorax": [],
                              "opacity": ["opacities"]})
    got = [(m.term, m.negated) for m in ms]
    assert got == [("pleural effusion", True), ("consolidation", False), ("pneumothorax", True),
                   ("pneumothorax", True), ("consolidation", True), ("opacity", False)]
    assert text[ms[1].start:ms[1].end] == "consolidation"


def test_longest_match_wins_and_hyphen_space_plural_variants_match():
    ms = find_mentions("An atypical pigment network and blue white veils.",
                       {"pigment network": [], "atypical pigment network": [], "blue-whitish veil": ["blue-white veil"]})
    assert [(m.term, m.surface) for m in ms] == [("atypical pigment network", "atypical pigment network"),
                                                 ("blue-whitish veil", "blue white veils")]


def test_label_text_affirmed_beats_denied_and_unmentioned_is_none():
    vocab = {"effusion": ["effusions"], "edema": [], "nodule": ["nodules"]}
    assert label_text("No effusion on the left. Small effusion on the right. No nodules.", vocab) == {
        "effusion": 1, "edema": None, "nodule": 0}
    assert label_text(None, vocab) == {"effusion": None, "edema": None, "nodule": None}


def test_sentence_spans_keep_decimal_numbers():
    text = "A lesion of 0.5 cm. Second sentence!"
    assert [text[s:e] for s, e in sentence_spans(text)] == ["A lesion of 0.5 cm.", "Second sentence!"]


def test_real_clinical_notes_labels(data_root):
    notes = load_clinical_notes(data_root / "covid-cxr" / "metadata.csv")
    assert len(notes) == 575
    vocab = {k: v["synonyms"] for k, v in cxr_notes_vocab().items()}
    labels = [label_text(n, vocab) for _, n in notes]
    pos = {k: sum(lab[k] == 1 for lab in labels) for k in vocab}
    neg = {k: sum(lab[k] == 0 for lab in labels) for k in vocab}
    # the notes describe mostly COVID-19 pneumonia: bilateral consolidation is common, effusion mostly denied
    assert pos["consolidation"] > 80 and pos["bilateral_involvement"] > 100
    assert neg["pleural_effusion"] > pos["pleural_effusion"] // 2
    # hand-checked notes: "No pleural effusion." is denied; "...suggesting pleural effusion" is affirmed
    denied = [n for _, n in notes if "No pleural effusion." in n]
    assert denied and all(label_text(n, vocab)["pleural_effusion"] == 0 for n in denied
                          if "effusion" not in n.replace("No pleural effusion.", ""))
    suggested = [n for _, n in notes if "suggesting pleural effusion" in n]
    assert suggested and all(label_text(n, vocab)["pleural_effusion"] == 1 for n in suggested)


def test_hedges_make_a_mention_uncertain_and_a_denial_still_wins():
    vocab = {"pneumonia": [], "effusion": [], "nodule": ["nodules"]}
    cases = {
        "Cannot exclude pneumonia. No effusion.": {"pneumonia": 0.5, "effusion": 0, "nodule": None},
        "Pneumonia cannot be excluded; possible small effusion.": {"pneumonia": 0.5, "effusion": 0.5, "nodule": None},
        "May represent pneumonia. Nodules are seen.": {"pneumonia": 0.5, "effusion": None, "nodule": 1},
        "Not likely pneumonia. Possible effusion on the left. Effusion on the right.": {
            "pneumonia": 0, "effusion": 1, "nodule": None},
    }
    for text, want in cases.items():
        assert label_text(text, vocab, uncertain=0.5) == want, text
    assert label_text("Cannot exclude pneumonia.", vocab)["pneumonia"] == 1  # default: read as affirmed (as before)
    assert [m.negated for m in find_mentions("Not likely pneumonia.", vocab)] == [True]


def test_real_clinical_notes_hedges(data_root):
    notes = dict(load_clinical_notes(data_root / "covid-cxr" / "metadata.csv"))
    vocab = {k: v["synonyms"] for k, v in cxr_notes_vocab().items()}
    # hand-checked hedges in the notes, each finding named nowhere else in its note
    for phrase, concept in (("suspected traces of effusion", "pleural_effusion"),
                            ("probably some consolidation in the left lower lobe", "lower_zone_predominance"),
                            ("questionable linear opacities", "opacity")):
        hits = [n for n in notes.values() if phrase in n]
        assert hits and all(label_text(n, vocab, uncertain=0.5)[concept] == 0.5 for n in hits), phrase
    # ... and one affirmed elsewhere in its note: "Possible pulmonary nodules. ... Few peripheral hazy nodules"
    both = [n for n in notes.values() if "Possible pulmonary nodules." in n]
    assert both and all(label_text(n, vocab, uncertain=0.5)["nodules"] == 1 for n in both)
