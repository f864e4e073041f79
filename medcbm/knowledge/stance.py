"""Which class a corpus passage argues for: the ``concepts`` / ``stance`` / ``qualifier`` fields of a JSONL row.

A passage of the starter corpus may say which vocabulary concepts it is about (``concepts``, the keys the
models use: ``pigment_network_atypical``, ``ground_glass_opacity``) and which class the finding supports
(``stance``): a HAM10000 class (``mel``), a coarse group (``malignant``, ``benign``), a chest X-ray class
(``covid``, ``pneumonia``, ``no_finding``), or ``depends``, which needs a ``qualifier`` saying on what
(e.g. regular vs irregular blotch). Rows without these fields stay valid (older corpora).
"""

from __future__ import annotations

from typing import Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

#: coarse groups and the HAM10000 classes they hold (the project's benign/malignant split of HAM10000)
STANCE_GROUPS: dict[str, tuple[str, ...]] = {"malignant": ("mel", "bcc", "akiec"),
                                             "benign": ("nv", "bkl", "df", "vasc")}
CLASS_STANCES = ("nv", "mel", "bkl", "bcc", "akiec", "df", "vasc", "covid", "pneumonia", "no_finding")
DEPENDS = "depends"
STANCES = (*STANCE_GROUPS, *CLASS_STANCES, DEPENDS)
ANNOTATION_FIELDS = ("concepts", "stance", "qualifier")


class PassageAnnotation(BaseModel):
    """The validated ``concepts`` / ``stance`` / ``qualifier`` of one corpus row."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    concepts: list[str] = Field(default_factory=list)
    stance: str | None = None
    qualifier: str = ""

    @field_validator("concepts")
    @classmethod
    def _slugs(cls, v: list[str]) -> list[str]:
        bad = [c for c in v if not isinstance(c, str) or not c or c != c.strip().lower() or " " in c]
        if bad:
            raise ValueError(f"concept names must be lower-case keys without spaces, got {bad}")
        return v

    @field_validator("stance")
    @classmethod
    def _known(cls, v: str | None) -> str | None:
        if v is not None and v not in STANCES:
            raise ValueError(f"unknown stance {v!r}; one of {', '.join(STANCES)}")
        return v

    @model_validator(mode="after")
    def _qualified(self) -> "PassageAnnotation":
        if self.stance == DEPENDS and not self.qualifier.strip():
            raise ValueError("stance 'depends' needs a qualifier saying on what (e.g. regular vs irregular blotch)")
        if self.stance is not None and not self.concepts:
            raise ValueError("a stance needs the concepts it is about")
        return self


def parse_annotation(row: Mapping) -> tuple[PassageAnnotation | None, str | None, str | None]:
    """``(annotation, error message, field)`` of a corpus row; ``(None, None, None)`` when it has none."""
    if not any(k in row for k in ANNOTATION_FIELDS):
        return None, None, None
    try:
        return PassageAnnotation.model_validate({k: row[k] for k in ANNOTATION_FIELDS if k in row}), None, None
    except ValidationError as err:
        e = err.errors()[0]
        where = str(e["loc"][0]) if e["loc"] else "stance"
        return None, e["msg"].removeprefix("Value error, "), where


def stance_members(stance: str) -> set[str]:
    """The class keys a stance speaks for (``mel`` -> ``{mel, malignant}``; ``malignant`` -> its classes too)."""
    if stance in STANCE_GROUPS:
        return {stance, *STANCE_GROUPS[stance]}
    return {stance, *(g for g, members in STANCE_GROUPS.items() if stance in members)}


def stance_sign(stance: str | None, class_keys: Sequence[str]) -> int:
    """+1 when the stance supports one of ``class_keys`` (a model class and the bank classes it stands for),
    −1 when it supports another class, 0 for ``depends`` or no stance."""
    if not stance or stance == DEPENDS:
        return 0
    return 1 if stance_members(stance) & set(class_keys) else -1
