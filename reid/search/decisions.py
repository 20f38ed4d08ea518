"""How search.py judges a pair of images "same person" or not: the P(same) it reports (the run's
calibration, thresholds.yaml) and the threshold it decides at, with where each comes from."""
import os
import sys
from dataclasses import dataclass
from typing import Callable

import numpy as np

from reid.cli import UserError
from reid.evaluation.verification import beta_logit, load_thresholds, probability, with_prior


@dataclass(frozen=True)
class Judge:
    """How pairs are judged. p_same(cosine, logit) gives P(same), and p_head(logit) the head's
    calibrated P(same); either is None where the run has none. "Same person" is P(same) >= threshold,
    or cosine >= threshold where there is no P(same)."""
    p_same: Callable | None
    p_head: Callable | None
    threshold: float
    decided_by: str  # the score P(same) comes from: "cosine" or "head"
    made: str  # how P(same) was made, in words ("" without one)
    source: str  # where the threshold comes from, in words

    @property
    def decided_on(self):
        return "P(same)" if self.p_same is not None else "cosine similarity"

    def scores(self, cosine, logit):
        """results.csv's scores of a pair from its cosine similarity and the head's logit (None
        without a head), and the decision: same (1 or 0)."""
        p = "" if self.p_same is None else float(self.p_same(cosine, logit))
        return {"cosine": cosine, "p_same": p, "p_head": "" if self.p_head is None else float(self.p_head(logit)),
                "p_head_raw": "" if logit is None else float(probability(logit)),
                "same": int((cosine if p == "" else p) >= self.threshold), "decided_by": self.decided_by,
                "threshold": self.threshold}

    def rule(self):
        """The decision, and how P(same) was made, in words: one item each."""
        return ([f"same person: {self.decided_on} >= {self.threshold:.6g} ({self.source})"]
                + ([f"P(same): {self.made}"] if self.made else []))


def judge_of_run(folder, checkpoint, head, far, threshold=None, prior=None):
    """The Judge of run `folder`'s `checkpoint` (its head's (w, b), or None). With the run's
    calibration (thresholds.yaml, for this checkpoint), P(same) is cosine's, calibrated (beta
    calibration: an exact copy gets 1), at `prior` or the prior it was fitted at, and the
    threshold is the P(same) of the cosine threshold at false-accept rate `far`. Without one, a
    run with a head reports the head's raw output against its raw threshold (a thresholds.yaml
    that predates calibrations) or 0.5; a run with neither decides on cosine. A given
    `threshold` replaces the calibrated one."""
    calibrated = load_thresholds(folder)
    if calibrated is not None and calibrated.get("checkpoint") != str(checkpoint):
        calibrated = None

    def at_far():
        return f"calibrated at FAR {far:g} on {calibrated['pairs']}"
    if calibrated is not None and "cosine_beta" in calibrated:
        fitted = calibrated["prior"]
        prior_used = prior if prior is not None else fitted
        beta, platt = calibrated["cosine_beta"], calibrated.get("head_platt")
        if beta["a"] == 0 and beta["b"] == 0:
            print(f"warning: in the calibration of {os.path.abspath(folder)}, P(same) does not rise with cosine "
                  f"similarity: this run does not tell these people apart; do not trust its decisions", file=sys.stderr)

        def p_same(cosine, logit):
            return probability(with_prior(beta_logit(cosine, **beta), fitted, prior_used))

        def p_head(logit):
            return probability(with_prior(platt["a"] * np.asarray(logit, np.float64) + platt["b"], fitted, prior_used))
        made = (f"cosine similarity calibrated on {calibrated['pairs']}, at a prior of {prior_used:.4g}"
                + (" (the pairs' own; --prior changes it)" if prior is None else f" (fitted at {fitted:.4g})"))
        head_p = p_head if platt and head is not None else None
        if threshold is not None:
            return Judge(p_same, head_p, threshold, "cosine", made, "--threshold")
        at = float(p_same(calibrated["cosine"][f"far={far:g}"], None))
        return Judge(p_same, head_p, at, "cosine", made, at_far())
    if prior is not None:
        raise UserError(f"--prior needs a calibrated P(same), and {os.path.abspath(folder)} has none for "
                        f"net_{checkpoint}.pth (its thresholds.yaml predates calibrations, or it has none); "
                        f"leave --prior out, or train it again")
    if head is not None:
        def raw(cosine, logit):
            return probability(logit)
        made = "the head's raw output, uncalibrated (this run's thresholds.yaml predates calibrations)"
        if threshold is not None:
            return Judge(raw, None, threshold, "head", made, "--threshold")
        if calibrated is not None:
            return Judge(raw, None, float(calibrated["head"][f"far={far:g}"]), "head", made, at_far())
        print(f"note: {os.path.abspath(folder)} has no threshold calibrated for net_{checkpoint}.pth; the head "
              f"decides on its own (P(same) >= 0.5), uncalibrated: pass --threshold to choose", file=sys.stderr)
        return Judge(raw, None, 0.5, "head", made, "the head's own decision, uncalibrated")
    if threshold is not None:
        return Judge(None, None, threshold, "cosine", "", "--threshold")
    if calibrated is not None:
        return Judge(None, None, float(calibrated["cosine"][f"far={far:g}"]), "cosine", "", at_far())
    raise UserError(f"{os.path.abspath(folder)} has neither a verification head nor a threshold calibrated for "
                    f"net_{checkpoint}.pth (runs of the original code have neither); pass --threshold, a cosine "
                    f"similarity above which two images count as the same person, or calibrate it")
