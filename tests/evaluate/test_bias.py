"""Bias probes (model side) and group-term counts (data side)."""

from dataclasses import replace

import pytest
from torch import nn

from kiln.curate.groupterms import GroupTermCounter
from kiln.evaluate.bias import PROBES, bias_probes, pairs, wilson
from kiln.models.registry import FAMILIES
from kiln.models.spec import Scored
from tests.evaluate.test_tasks import encode
from tests.objectives.test_objectives import IDS


def test_every_axis_has_pairs_that_differ_only_in_the_group_term():
    assert set(PROBES) == {"gender", "race_ethnicity", "religion", "nationality", "age", "disability"}
    for axis in PROBES:
        found = pairs(axis)
        assert len(found) >= 14, axis
        for template, stereo, anti in found:
            assert template.count("{}") == 1 and stereo != anti
            assert not template.endswith("{}"), "words after the term are what is scored"


def test_the_report_counts_the_pairs_a_scorer_prefers():
    """A scorer that likes every sentence whose term names a woman: on the gender axis it prefers the
    stereotyped sentence exactly in the templates that attach the stereotype to women."""
    female = {tuple(encode(t)) for t in ("The woman", "My sister", "The girl", "Her mother")}

    def score(model, requests, ids, precision, max_len):  # every gender template starts with its term
        return [Scored(0.0 if tuple(ctx) in female else -1.0, False) for ctx, _ in requests]

    spec = replace(FAMILIES["decoder"], score=score)
    out = bias_probes(spec, nn.Linear(1, 1), encode, IDS, "fp32", 64)
    gender = out["gender"]
    women_first = sum(len(s) for t, s, a in PROBES["gender"] if s[0] == "The woman")
    assert gender["pairs"] == len(pairs("gender")) and gender["stereotyped"] == women_first
    assert gender["share"] == women_first / gender["pairs"]
    assert gender["ci95"] == list(wilson(women_first, gender["pairs"]))
    assert out["all"]["pairs"] == sum(len(pairs(a)) for a in PROBES)


def test_wilson_interval():
    lo, hi = wilson(16, 32)
    assert lo == pytest.approx(0.336, abs=1e-3) and hi == pytest.approx(0.664, abs=1e-3)
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0


def test_group_terms_are_counted_as_whole_words_per_axis():
    counter = GroupTermCounter()
    counter.add("She told her brother that the women and men of the Muslim and Christian faiths met.")
    counter.add("Shepherds herded sheep; an African American senator and a blind veteran spoke.")
    axes = counter.as_dict()["axes"]
    assert axes["gender"] == {"female": 3, "male": 2}  # she, her, women / brother, men; not "Shepherds"
    assert axes["religion"]["muslim"] == 1 and axes["religion"]["christian"] == 1
    assert axes["race_ethnicity"]["black"] == 1 and axes["disability"]["disability"] == 1
