"""How search.py judges a pair of images "same person" or not: the P(same) it reports and the
threshold it decides at, with where each comes from: the run's calibration (thresholds.yaml), or
the footage searched.

A run is calibrated on held-out images of its own dataset; boxes cut from the frames of a user's
cameras are not those crops, and two people there can look more alike (or less) than any two of
its calibration. Footage brings its own pairs of different people, without labels: two people on
one frame whose boxes do not overlap (gallery.Described.negatives: a box against the other's
tracklet, as a search compares an image with a tracklet). Where the footage of a search gives
enough of them (MIN_ABOVE of them above the threshold: 300 at FAR 1e-2), the threshold is the
cosine similarity that a share --far of them reach, and the run's P(same) is shifted along cosine
by the difference between that threshold and the run's own at that FAR: the likelihood ratio
is taken as the run's, moved to where these cameras put different people. Where there are too
few (a single walker, one person at a time), the run's calibration decides, and the output says so.
"""
import os
import sys
from dataclasses import dataclass
from typing import Callable

import numpy as np

from reid.cli import UserError
from reid.evaluation.verification import beta_logit, load_thresholds, probability, threshold_at_far, with_prior


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


# footage sets the threshold where at least this many of its pairs of different people lie above it
MIN_ABOVE = 3


@dataclass(frozen=True)
class FootagePairs:
    """The pairs of different people of a search's footage (module docstring): their cosine
    similarities, and (footage name, pairs) of each footage they come from."""
    cosines: np.ndarray
    sources: list

    @classmethod
    def of(cls, described):
        """The FootagePairs of the footage searched (gallery.Described, each giving its negatives()),
        or None for a search of image folders alone."""
        if not described:
            return None
        negatives = [d.negatives() for d in described]
        return cls(np.concatenate(negatives), [(d.footage.name, len(n)) for d, n in zip(described, negatives)])

    def words(self):
        return ", ".join(f"{count} in {name}" for name, count in self.sources)


def judge_of_run(folder, checkpoint, head, far, threshold=None, prior=None, footage=None):
    """The Judge of run `folder`'s `checkpoint` (its head's (w, b), or None). With the run's
    calibration (thresholds.yaml, for this checkpoint), P(same) is cosine's, calibrated (beta
    calibration: an exact copy gets 1), at `prior` or the prior it was fitted at, and the
    threshold is the P(same) of the cosine threshold at false-accept rate `far`. Without one, a
    run with a head reports the head's raw output against its raw threshold (a thresholds.yaml
    that predates calibrations) or 0.5; a run with neither decides on cosine. With `footage`
    (FootagePairs) holding enough pairs, the threshold is theirs and P(same) shifted to it (module
    docstring). A given `threshold` replaces the calibrated one."""
    calibrated = load_thresholds(folder)
    if calibrated is not None and calibrated.get("checkpoint") != str(checkpoint):
        calibrated = None
    on_footage = None
    if footage is not None and threshold is None:
        needed = int(np.ceil(MIN_ABOVE / far))
        if len(footage.cosines) >= needed:
            on_footage = threshold_at_far(footage.cosines, far)
        else:
            names = ", ".join(name for name, _ in footage.sources)
            found = (f"no frame of {names} shows two people apart (boxes that do not overlap), so the footage gives "
                     f"no pairs of different people" if not len(footage.cosines) else
                     f"the footage gives {len(footage.cosines)} pairs of different people ({footage.words()}; two "
                     f"people apart on one frame), fewer than the {needed} that a threshold at FAR {far:g} needs")
            print(f"note: {found}: the run's calibration decides, made on images unlike these (footage with more "
                  f"people at once, or more of it, lets the footage decide)", file=sys.stderr)
    footage_source = None if on_footage is None else (
        f"FAR {far:g} on this footage's {len(footage.cosines)} pairs of different people ({footage.words()}; a box "
        f"against the tracklet of another person apart from it on its frame)")

    def at_far():
        return f"calibrated at FAR {far:g} on {calibrated['pairs']}"
    if calibrated is not None and "cosine_beta" in calibrated:
        fitted = calibrated["prior"]
        prior_used = prior if prior is not None else fitted
        beta, platt = calibrated["cosine_beta"], calibrated.get("head_platt")
        if beta["a"] == 0 and beta["b"] == 0:
            print(f"warning: in the calibration of {os.path.abspath(folder)}, P(same) does not rise with cosine "
                  f"similarity: this run does not tell these people apart; do not trust its decisions", file=sys.stderr)

        own = calibrated["cosine"][f"far={far:g}"]
        shift = 0.0 if on_footage is None else own - on_footage

        def p_same(cosine, logit):
            return probability(with_prior(beta_logit(np.asarray(cosine) + shift, **beta), fitted, prior_used))

        def p_head(logit):
            return probability(with_prior(platt["a"] * np.asarray(logit, np.float64) + platt["b"], fitted, prior_used))
        made = (f"cosine similarity calibrated on {calibrated['pairs']}, at a prior of {prior_used:.4g}"
                + (" (the pairs' own; --prior changes it)" if prior is None else f" (fitted at {fitted:.4g})"))
        if on_footage is not None:
            made += (f", moved {-shift:+.3f} along cosine to this footage's pairs of different people (FAR {far:g} "
                     f"at cosine {on_footage:.3f} here, {own:.3f} in the calibration)")
        head_p = p_head if platt and head is not None else None
        if threshold is not None:
            return Judge(p_same, head_p, threshold, "cosine", made, "--threshold")
        at = float(p_same(own - shift, None))
        return Judge(p_same, head_p, at, "cosine", made, footage_source or at_far())
    if prior is not None:
        raise UserError(f"--prior needs a calibrated P(same), and {os.path.abspath(folder)} has none for "
                        f"net_{checkpoint}.pth (its thresholds.yaml predates calibrations, or it has none); "
                        f"leave --prior out, or train it again")
    if on_footage is not None:
        # no calibrated P(same) to move: decided on cosine, the head's raw output reported beside it
        return Judge(None, None, on_footage, "cosine", "", footage_source)
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
