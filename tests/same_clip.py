"""One check shared by the tests that compare a sample written during training with the
saved pipeline's output for the same call, both read back from mp4."""


def assert_same_clip(watched, got, other) -> None:
    """``watched`` and ``got`` are one clip: two encodes agree up to x264/AAC rounding (the
    sampling's float sums may differ in their last bits between processes on a loaded
    machine), far closer than ``other``, another clip of the same call."""
    for part in ("video", "audio"):
        same = (getattr(watched, part) - getattr(got, part)).abs().mean()
        apart = (getattr(watched, part) - getattr(other, part)).abs().mean()
        assert same < 0.05 and same < apart / 5, (part, float(same), float(apart))
