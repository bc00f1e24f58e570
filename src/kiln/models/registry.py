"""The model families kiln knows: one line each (a family is its file's SPEC, see spec.py)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from kiln.errors import KilnError
from kiln.models import decoder, encdec, encoder, hybrid, vlm
from kiln.models.spec import FamilySpec

if TYPE_CHECKING:
    from kiln.models.config import ModelConfig
    from kiln.objectives.base import Objective
    from kiln.objectives.config import ObjectiveConfig
    from kiln.tokenizer import SpecialIds

FAMILIES: dict[str, FamilySpec] = {
    spec.name: spec
    for spec in (
        decoder.SPEC,
        hybrid.SPEC,
        encoder.SPEC,
        encdec.SPEC,
        vlm.SPEC,
    )
}


def family(name: str) -> FamilySpec:
    if name not in FAMILIES:
        raise KilnError(f"model.family={name!r} is not a kiln family; choose one of {', '.join(FAMILIES)}")
    return FAMILIES[name]


def checked(cfg: ModelConfig) -> FamilySpec:
    """The family of `cfg`, after its own checks: an option the family has no place for, or its own
    rules, refused in one line."""
    spec = family(cfg.family)
    default = {f.name: f.default for f in dataclasses.fields(cfg)}
    found = [name for name in spec.refuses if getattr(cfg, name) != default[name]]
    if found:
        raise KilnError(
            f"model.{', model.'.join(found)}: model.family={cfg.family} has no place for "
            f"{'it' if len(found) == 1 else 'them'}; leave {'it' if len(found) == 1 else 'them'} off"
        )
    if spec.check is not None:
        spec.check(cfg)
    return spec


def build_objective(model: ModelConfig, cfg: ObjectiveConfig, ids: SpecialIds) -> Objective:
    """The family's training objective (causal LM, masked LM, span corruption)."""
    objective = family(model.family).objective
    return objective(getattr(cfg, objective.section), ids)
