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
    from kiln.runconfig import RunConfig
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
    _check_sections(cfg)
    if spec.check is not None:
        spec.check(cfg)
    return spec


def check_run(cfg: RunConfig) -> FamilySpec:
    """The family of `cfg.model` after its own checks and those it makes of the whole run config."""
    spec = checked(cfg.model)
    if spec.check_run is not None:
        spec.check_run(cfg)
    return spec


SECTION_FAMILIES = {"ssm": "hybrid", "vision": "vlm", "num_decoder_layers": "encdec"}
"""The options only one family reads: set on another, they would change nothing."""


def _check_sections(cfg: ModelConfig) -> None:
    """Refuse, in one line, a section the family does not read, or an MoE section that would make no
    layer an MoE layer (moe.every above the depth)."""
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    for name, owner in SECTION_FAMILIES.items():
        f = fields[name]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if cfg.family != owner and getattr(cfg, name) != default:
            raise KilnError(f"model.{name} is read by model.family={owner} only; leave it off for {cfg.family}")
    layers = max(cfg.num_layers, cfg.decoder_layers if cfg.family == "encdec" else 0)
    if cfg.moe.num_experts > 0 and not any(cfg.is_moe_layer(i) for i in range(layers)):
        raise KilnError(
            f"model.moe.every={cfg.moe.every} makes none of the {layers} layers an MoE layer; "
            "lower it or leave model.moe.num_experts at 0"
        )


def build_objective(model: ModelConfig, cfg: ObjectiveConfig, ids: SpecialIds) -> Objective:
    """The family's training objective (causal LM, masked LM, span corruption)."""
    objective = family(model.family).objective
    return objective(getattr(cfg, objective.section), ids)
