"""A PyAV input container whose failed seeks fall back to the start of the file.

A truncated mkv (a copy cut short, a recording that crashed) loses its index (the cues are
written at the end), and FFmpeg then refuses *every* seek, ``seek(0)`` included, with
``PermissionError: Operation not permitted``, although the data that is there decodes fine.
``open_input`` returns a container that answers a failed seek by opening the file again:
a fresh demuxer stands at the start, which is at or before any seek target, so the decode
loops of :mod:`avblocks.data.media` (which decode forward from wherever a seek lands) read on
correctly, only slower. ``seek_failed`` records that it happened, so errors can say the file
is damaged or truncated instead of blaming the request.

Streams are matched by index: a stream object taken from the container before a reopen still
selects the same stream afterwards. Containers replaced by a reopen stay open (their stream
objects may still be read) until ``InputContainer.close()``.
"""

import os

import av

__all__ = ["InputContainer", "open_input"]


class InputContainer:
    """``av.open(path)`` for reading, with seeks that cannot fail (see the module docstring)."""

    def __init__(self, path: "str | os.PathLike[str]"):
        self.path = str(path)
        self._opened = [av.open(self.path)]
        self.seek_failed = False
        duration = self._opened[0].duration
        # seconds the header declares (None: it declares none); read while the file is open
        self.declared_duration = None if duration is None else duration / av.time_base

    @property
    def _current(self):
        return self._opened[-1]

    def __getattr__(self, name: str):  # streams, duration, start_time, ...
        return getattr(self._current, name)

    def _own(self, stream):
        return None if stream is None else self._current.streams[stream.index]

    def seek(self, offset: int, *, stream=None, **kwargs) -> None:
        try:
            self._current.seek(offset, stream=self._own(stream), **kwargs)
        except av.error.FFmpegError:
            self.seek_failed = True
            self._opened.append(av.open(self.path))  # at the start: before any target

    def decode(self, stream):
        return self._current.decode(self._own(stream))

    def demux(self, stream):
        return self._current.demux(self._own(stream))

    def close(self) -> None:
        for container in self._opened:
            container.close()

    def __enter__(self) -> "InputContainer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_input(path: "str | os.PathLike[str]") -> InputContainer:
    """``path`` opened for reading, with failed seeks answered by reopening it (module doc)."""
    return InputContainer(path)
