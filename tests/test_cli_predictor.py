"""predict's flags become a Predictor in one place (cli_tracks.predictor_from), for photos,
--track and --engine ray --track alike: every flag named like a Predictor keyword reaches it."""

from __future__ import annotations

import inspect

from facegender import options
from facegender.cli import build_parser
from facegender.cli_tracks import predictor_from, predictor_options
from facegender.infer.predictor import Predictor
from facegender.verbs import PredictOptions

FLAGS = ["--largest", "--detector", "wide", "--max-mb", "2", "--no-tta", "--unsure-band", "0.1",
         "--include-hidden", "--min-face", "16", "--score-threshold", "0.7", "--threads", "1"]


def test_every_predictor_flag_reaches_the_predictor():
    args = build_parser().parse_args(["predict", "x.jpg", *FLAGS])
    got = predictor_options(args, keep_images=True)
    keywords = {n for n, p in inspect.signature(Predictor.__init__).parameters.items()
                if p.kind is p.KEYWORD_ONLY}
    declared = {f.name for f in options.fields(PredictOptions)}
    assert declared & keywords <= set(got) <= keywords  # none left out, none invented
    assert (got["largest"], got["detector"], got["max_bytes"], got["tta"], got["unsure_band"],
            got["include_hidden"], got["min_face"], got["score_threshold"], got["keep_images"]) \
        == (True, "wide", 2 * 2**20, False, 0.1, True, 16, 0.7, True)
    p = predictor_from(args)
    assert (p.options.largest, p.detector_mode, p.options.max_bytes, p.options.tta,
            p.options.unsure_band, p.min_face, p.score_threshold) == \
        (True, "wide", 2 * 2**20, False, 0.1, 16, 0.7)


def test_defaults_are_the_predictors_own():
    args = build_parser().parse_args(["predict", "x.jpg"])
    got = predictor_options(args)
    init = inspect.signature(Predictor.__init__).parameters
    assert "max_bytes" not in got  # no --max-mb: the Predictor's own rule
    assert all(got[k] == init[k].default for k in got), got
