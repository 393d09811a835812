"""Reference emotion spans in the format of SpeechBrain's ZED recipe (emotion diarization):

    {utt_id: {"wav": path, "duration": seconds, "emotion": [{"emo": label, "start": s, "end": s}]}}

one JSON object per corpus or split, every instant outside the listed events neutral. An
entry is matched to an audio file by the wav's file name without extension. Checked here:
the shape of every entry, events that end after they start, lie inside the file and do not
overlap. ``event_class`` says which of a model's classes an event's label means.
"""

import json
import os
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

from fairseq_flea.io.errors import FleaInputError

# Spans and durations may be rounded (ZED writes them to the ms; a corpus may to 10 ms):
# an event may end this far past the file, and is then cut at the file's end.
SPAN_TOLERANCE_SECONDS = 0.02


@dataclass(frozen=True)
class EmotionEvent:
    emo: str
    start: float
    end: float


@dataclass(frozen=True)
class SpanEntry:
    utt_id: str
    wav: str
    duration: float
    events: Tuple[EmotionEvent, ...]

    @property
    def stem(self) -> str:
        return wav_stem(self.wav)


def wav_stem(path: str) -> str:
    """The file name without directory and extension: how spans and audio files are matched."""
    return os.path.splitext(os.path.basename(path))[0]


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FleaInputError(f"{where} must be a number of seconds, got {value!r}")
    return float(value)


def parse_span_entry(utt_id: str, entry: object, source: str) -> SpanEntry:
    """One entry, checked against its own duration: every problem names the utterance."""
    where = f"{source}: utterance {utt_id}"
    if not isinstance(entry, dict) or not {"wav", "duration", "emotion"} <= set(entry):
        raise FleaInputError(f"{where}: expected an object with 'wav', 'duration' and 'emotion', got {entry!r:.120}")
    if not isinstance(entry["wav"], str) or not entry["wav"]:
        raise FleaInputError(f"{where}: 'wav' must be the audio file's path, got {entry['wav']!r}")
    duration = _number(entry["duration"], f"{where}: 'duration'")
    if duration <= 0:
        raise FleaInputError(f"{where}: duration {duration} s is not positive")
    if not isinstance(entry["emotion"], list):
        raise FleaInputError(f"{where}: 'emotion' must be a list of {{'emo', 'start', 'end'}}, got {entry['emotion']!r:.120}")
    events: List[EmotionEvent] = []
    for number, event in enumerate(entry["emotion"], start=1):
        if not isinstance(event, dict) or not {"emo", "start", "end"} <= set(event):
            raise FleaInputError(f"{where}: emotion {number} must have 'emo', 'start' and 'end', got {event!r:.120}")
        if not isinstance(event["emo"], str) or not event["emo"]:
            raise FleaInputError(f"{where}: emotion {number} has no label ('emo' is {event['emo']!r})")
        start = _number(event["start"], f"{where}: emotion {number} 'start'")
        end = _number(event["end"], f"{where}: emotion {number} 'end'")
        if end <= start:
            raise FleaInputError(f"{where}: emotion {number} ({event['emo']}) ends at {end} s, not after its start {start} s")
        events.append(EmotionEvent(event["emo"], start, end))
    events.sort(key=lambda event: event.start)
    for before, after in zip(events, events[1:]):
        if after.start < before.end:
            raise FleaInputError(
                f"{where}: emotions {before.emo} ({before.start}-{before.end} s) and {after.emo} "
                f"({after.start}-{after.end} s) overlap"
            )
    entry_spans = SpanEntry(utt_id, entry["wav"], duration, tuple(events))
    check_events_inside(entry_spans, duration, "its duration", source)
    return entry_spans


def check_events_inside(entry: SpanEntry, duration: float, what: str, source: str) -> None:
    """Every event of ``entry`` lies in [0, duration] (``what`` says whose duration)."""
    for event in entry.events:
        if event.start < 0 or event.end > duration + SPAN_TOLERANCE_SECONDS:
            raise FleaInputError(
                f"{source}: utterance {entry.utt_id}: emotion {event.emo} ({event.start}-{event.end} s) "
                f"lies outside the file (0-{duration:.3f} s, {what})"
            )


def event_class(name: str, class_names: Sequence[str], utt_id: str, source: str) -> str:
    """The model's class an event label means: the same name, else the one class whose name
    begins the label or that the label begins (ZED's 'angry' is IEMOCAP's 'ang')."""
    if name in class_names:
        return name
    lower = name.lower()
    candidates = [c for c in class_names if lower.startswith(c.lower()) or c.lower().startswith(lower)]
    if len(candidates) != 1:
        raise FleaInputError(
            f"{source}: utterance {utt_id}: emotion {name!r} is "
            f"{'none' if not candidates else 'more than one'} of the model's classes ({', '.join(class_names)})"
        )
    return candidates[0]


def read_spans(path: str) -> Dict[str, SpanEntry]:
    """Every entry of a ZED-style spans file, checked; keyed by utterance id."""
    if not os.path.isfile(path):
        raise FleaInputError(f"{path}: spans file not found")
    try:
        with open(path) as spans_file:
            document = json.load(spans_file)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FleaInputError(f"{path}: not a JSON spans file ({error})") from None
    if not isinstance(document, dict) or not document:
        raise FleaInputError(f"{path}: expected a non-empty object {{utt_id: {{'wav', 'duration', 'emotion'}}}}")
    entries = {str(utt_id): parse_span_entry(str(utt_id), entry, path) for utt_id, entry in document.items()}
    seen: Dict[str, str] = {}
    for entry in entries.values():
        if entry.stem in seen:
            raise FleaInputError(
                f"{path}: utterances {seen[entry.stem]} and {entry.utt_id} both name a wav called {entry.stem!r}: "
                "spans are matched by file name"
            )
        seen[entry.stem] = entry.utt_id
    return entries


def clip_to_duration(entry: SpanEntry, duration: float) -> SpanEntry:
    """The entry on a file of ``duration`` seconds (checked: inside within the tolerance), its
    events cut at the file's end."""
    events = tuple(EmotionEvent(e.emo, e.start, min(e.end, duration)) for e in entry.events)
    return SpanEntry(entry.utt_id, entry.wav, duration, tuple(e for e in events if e.end > e.start))


def spans_by_stem(entries: Dict[str, SpanEntry]) -> Dict[str, SpanEntry]:
    return {entry.stem: entry for entry in entries.values()}


def match_spans(
    entries: Dict[str, SpanEntry], paths: Sequence[str], durations: Sequence[float], source: str,
    every_entry: bool = True,
) -> Dict[int, SpanEntry]:
    """Position in ``paths`` -> its spans (clipped to the file's real duration), matched by
    file name without extension. With ``every_entry``, an entry that matches no path is an
    error naming the utterance; two paths of the same file name are an error when spans name it."""
    positions: Dict[str, List[int]] = {}
    for position, path in enumerate(paths):
        positions.setdefault(wav_stem(path), []).append(position)
    matched: Dict[int, SpanEntry] = {}
    for entry in entries.values():
        found = positions.get(entry.stem, [])
        if not found:
            if every_entry:
                raise FleaInputError(
                    f"{source}: utterance {entry.utt_id}: no audio file called {entry.stem!r} in the files evaluated"
                )
            continue
        if len(found) > 1:
            raise FleaInputError(
                f"{source}: utterance {entry.utt_id}: {len(found)} audio files are called {entry.stem!r} "
                f"({paths[found[0]]}, {paths[found[1]]}); spans are matched by file name"
            )
        position = found[0]
        if abs(entry.duration - durations[position]) > SPAN_TOLERANCE_SECONDS:
            raise FleaInputError(
                f"{source}: utterance {entry.utt_id}: duration {entry.duration} s, but {paths[position]} "
                f"lasts {durations[position]:.3f} s"
            )
        check_events_inside(entry, durations[position], f"{paths[position]}", source)
        matched[position] = clip_to_duration(entry, durations[position])
    return matched
