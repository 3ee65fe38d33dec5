"""AVSpec and the one exact rate conversion: values, errors, serialisation."""

import json
from fractions import Fraction

import pytest

from avblocks.audio import MelConfig
from avblocks.spec import AVSpec
from avblocks.timing import as_fraction, frame_columns

MEL16 = MelConfig(sample_rate=16000, n_fft=800, hop=200, n_mels=64)


@pytest.mark.parametrize(("value", "expected"), [
    (8, Fraction(8)),
    (Fraction(30000, 1001), Fraction(30000, 1001)),
    ("30000/1001", Fraction(30000, 1001)),
    ("29.97", Fraction(2997, 100)),
    (30000 / 1001, Fraction(30000, 1001)),  # the float NTSC rate comes back exact
    (29.97, Fraction(2997, 100)),
    (93.75 / 4, Fraction(375, 16)),
    (22050 / 2816, Fraction(11025, 1408)),  # a denominator above 1001 survives
    ("93.75/4", Fraction(375, 16)),
])
def test_as_fraction_reads_every_form_exactly(value, expected):
    assert as_fraction(value) == expected


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), "fast", True, None, "1/0"])
def test_as_fraction_refuses_bad_rates_naming_them(bad):
    with pytest.raises(ValueError, match="fps"):
        as_fraction(bad)


def test_times_may_be_zero_rates_may_not():
    assert as_fraction(0.0, "start", positive=False) == 0
    with pytest.raises(ValueError, match="start"):
        as_fraction(-0.5, "start", positive=False)


def test_frame_columns_and_its_hints():
    assert frame_columns(16000, Fraction(8), 200) == 10
    assert frame_columns(24000, Fraction(375, 16), 256) == 4  # vocos mel at 93.75 / 4 fps
    with pytest.raises(ValueError, match=r"nearest valid hops at 16000 Hz: \[200, 250\]"):
        frame_columns(16000, Fraction(8), 240)
    with pytest.raises(ValueError, match="not whole"):
        frame_columns(16000, Fraction(30000, 1001), 200)


def test_spec_derived_quantities():
    spec = AVSpec(fps=8, sample_rate=16000, num_frames=16, size=(32, 32), mel=MEL16)
    assert spec.fps == Fraction(8) and isinstance(spec.fps, Fraction)
    assert (spec.frame_columns, spec.samples_per_frame, spec.num_samples) == (10, 2000, 32000)
    assert spec.duration == 2 and spec.frame_of_sample(3999) == 1 and spec.frame_of_sample(4000) == 2
    assert spec.with_frames(4).num_samples == 8000


def test_fractional_spec_round_trips_through_json_exactly():
    spec = AVSpec(fps="93.75/4", sample_rate=24000, num_frames=8, size=(48, 64), channels=2,
                  mel=MelConfig.vocos())
    text = json.dumps(spec.to_dict())
    back = AVSpec.from_dict(json.loads(text))
    assert back == spec and back.fps == Fraction(375, 16)
    assert json.loads(text)["fps"] == "375/16"


@pytest.mark.parametrize(("kwargs", "named"), [
    ({"sample_rate": 22050}, r"sample_rate \(22050\) differs from mel.sample_rate \(16000\)"),
    ({"fps": 7}, "7 spectrogram columns|not a whole number"),
    ({"num_frames": 0}, r"num_frames \(0\)"),
    ({"size": (32,)}, "size"),
    ({"channels": 0}, r"channels \(0\)"),
    ({"fps": "fast"}, "fps"),
])
def test_spec_refuses_inconsistent_values_naming_them(kwargs, named):
    base = dict(fps=8, sample_rate=16000, num_frames=16, size=(32, 32), mel=MEL16)
    with pytest.raises(ValueError, match=named):
        AVSpec(**(base | kwargs))


def test_from_dict_names_unknown_and_missing_keys():
    data = AVSpec(fps=8, sample_rate=16000, num_frames=16, size=(32, 32), mel=MEL16).to_dict()
    with pytest.raises(ValueError, match="unknown key"):
        AVSpec.from_dict(data | {"frame_rate": 8})
    with pytest.raises(ValueError, match="missing key"):
        AVSpec.from_dict({k: v for k, v in data.items() if k != "num_frames"})
