"""GenEval's rules: does an image's set of detected objects satisfy a prompt's metadata? (pure)

The metadata is one GenEval row (djghosh13/geneval `prompts/`; Flow-GRPO `dataset/geneval/
*_metadata.jsonl`): `tag` (single_object, two_object, counting, colors, position, color_attr),
`include` (clauses that must hold, ANDed) and optional `exclude` (clauses that must not, ORed).
A clause is {"class": COCO name, "count": n >= 1, optional "color": one of COLORS, optional
"position": [relation, index of an earlier include clause]}.

Constants and rules as in official GenEval (`evaluation/evaluate_images.py`) and in Flow-GRPO's
reward server (yifan123/reward-server `reward_server/gen_eval.py`), which adds a training score:

- detections kept per class: score > 0.3 (> 0.9 on `counting` prompts), best first, at most 16,
  no NMS (`THRESHOLD`, `COUNTING_THRESHOLD`, `MAX_OBJECTS`, `NMS_THRESHOLD = 1.0`);
- position of A relative to B: centre offset, each axis shrunk by 0.1 x (A's + B's size)
  (`POSITION_THRESHOLD`), then the unit direction's component beyond 0.5 names left of / right
  of / above / below;
- `official_correct` (GenEval's `evaluate`): each include clause needs >= count objects; its
  colour and position are checked on the `count` most confident; an exclude clause fails at
  >= count objects;
- `partial_credit` (reward-server's `evaluate_reward`) -> (strict, score): strict needs exactly
  `count` objects, all of the colour, all in position (exclude clauses are not read); score is
  the mean of per-check credits: counting 1 - |count - found| / count (negative past twice the
  count), colour 1 - |count - n of that colour| / count, 0 for a colour or position check after
  a count miss, position 1 when it holds, and on a failed position 0 **and** 1 (the server's
  quirk, kept: the score is what Flow-GRPO trains on).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

THRESHOLD = 0.3
COUNTING_THRESHOLD = 0.9
MAX_OBJECTS = 16
POSITION_THRESHOLD = 0.1
COLORS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")
RELATIONS = ("left of", "right of", "above", "below")
TAGS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
# COCO's 80 thing classes in the detector's label order, named as GenEval's prompts name them
# (reward-server `reward_server/object_names.txt`; COCO's mouse/remote/keyboard are spelled out).
CLASS_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "computer mouse", "tv remote",
    "computer keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator",
    "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip


@dataclass(frozen=True)
class Detection:
    """One detected object: box (x1, y1, x2, y2) in pixels, score, and its mask (H, W) bool."""

    box: tuple[float, float, float, float]
    score: float
    mask: Tensor | None = None


# (the objects of one class, that class's name) -> one colour name per object
ColourFn = Callable[[Sequence[Detection], str], list[str]]


def check_metadata(metadata: Mapping[str, Any], classes: Sequence[str] = CLASS_NAMES) -> None:
    """A ValueError saying what is wrong with one GenEval metadata row, if anything."""
    if metadata.get("tag") not in TAGS:
        raise ValueError(f"metadata 'tag' must be one of {TAGS}, got {metadata.get('tag')!r}")
    include = metadata.get("include")
    if not isinstance(include, list) or not include:
        raise ValueError("metadata 'include' must be a non-empty list of clauses")
    exclude = metadata.get("exclude", [])
    if not isinstance(exclude, list):
        raise ValueError("metadata 'exclude' must be a list of clauses")
    for part, clauses in (("include", include), ("exclude", exclude)):
        for i, clause in enumerate(clauses):
            where = f"metadata {part}[{i}]"
            if not isinstance(clause, Mapping):
                raise ValueError(f"{where} must be an object")
            if clause.get("class") not in classes:
                raise ValueError(f"{where}: class {clause.get('class')!r} is not a detector class")
            count = clause.get("count")
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise ValueError(f"{where}: count must be an integer >= 1, got {count!r}")
            if "color" in clause and clause["color"] not in COLORS:
                raise ValueError(f"{where}: color must be one of {COLORS}, got {clause['color']!r}")
            if "position" in clause:
                position = clause["position"]
                valid = (
                    part == "include"
                    and isinstance(position, list | tuple)
                    and len(position) == 2
                    and position[0] in RELATIONS
                    and isinstance(position[1], int)
                    and 0 <= position[1] < i
                )
                if not valid:
                    raise ValueError(
                        f"{where}: position must be [relation in {RELATIONS}, index of an "
                        f"earlier include clause], got {position!r}"
                    )


def kept(candidates: Mapping[str, Sequence[Detection]], tag: str) -> dict[str, list[Detection]]:
    """Per class: detections above the prompt's threshold, best first, at most MAX_OBJECTS."""
    threshold = COUNTING_THRESHOLD if tag == "counting" else THRESHOLD
    out = {}
    for name, detections in candidates.items():
        best = sorted((d for d in detections if d.score > threshold), key=lambda d: -d.score)
        if best:
            out[name] = best[:MAX_OBJECTS]
    return out


def relative_position(a: Detection, b: Detection) -> set[str]:
    """Where A lies relative to B ({"left of", "above", ...}; empty when they overlap)."""
    centre_a = ((a.box[0] + a.box[2]) / 2, (a.box[1] + a.box[3]) / 2)
    centre_b = ((b.box[0] + b.box[2]) / 2, (b.box[1] + b.box[3]) / 2)
    size_a = (abs(a.box[2] - a.box[0]), abs(a.box[3] - a.box[1]))
    size_b = (abs(b.box[2] - b.box[0]), abs(b.box[3] - b.box[1]))
    offset = [centre_a[k] - centre_b[k] for k in (0, 1)]
    # Shrink each axis by 0.1 x the two sizes: touching objects are not "beside" each other.
    revised = [
        max(abs(offset[k]) - POSITION_THRESHOLD * (size_a[k] + size_b[k]), 0.0)
        * (1 if offset[k] > 0 else -1 if offset[k] < 0 else 0)
        for k in (0, 1)
    ]
    if all(abs(r) < 1e-3 for r in revised):
        return set()
    norm = (offset[0] ** 2 + offset[1] ** 2) ** 0.5
    dx, dy = revised[0] / norm, revised[1] / norm
    relations = set()
    if dx < -0.5:
        relations.add("left of")
    if dx > 0.5:
        relations.add("right of")
    if dy < -0.5:
        relations.add("above")
    if dy > 0.5:
        relations.add("below")
    return relations


def _in_position(found: Sequence[Detection], targets: Sequence[Detection], relation: str) -> bool:
    return all(relation in relative_position(a, b) for a in found for b in targets)


def official_correct(
    objects: Mapping[str, Sequence[Detection]], metadata: Mapping[str, Any], colours: ColourFn
) -> bool:
    """GenEval's `evaluate`: every include clause holds and no exclude clause does."""
    correct = True
    groups: list[Sequence[Detection] | None] = []
    for clause in metadata["include"]:
        name, count = clause["class"], clause["count"]
        found = list(objects.get(name, []))[:count]  # colour and position: the most confident
        matched = len(found) >= count
        if matched and "color" in clause:
            matched = colours(found, name).count(clause["color"]) >= count
        if matched and "position" in clause:
            relation, target = clause["position"]
            matched = groups[target] is not None and _in_position(
                found, groups[target] or [], relation
            )
        correct = correct and matched
        groups.append(found if matched else None)
    for clause in metadata.get("exclude", []):
        if len(objects.get(clause["class"], [])) >= clause["count"]:
            correct = False
    return correct


def partial_credit(
    objects: Mapping[str, Sequence[Detection]], metadata: Mapping[str, Any], colours: ColourFn
) -> tuple[bool, float]:
    """reward-server's `evaluate_reward`: (strictly correct, mean of the per-check credits)."""
    strict = True
    credits: list[float] = []
    groups: list[Sequence[Detection] | None] = []
    for clause in metadata["include"]:
        name, count = clause["class"], clause["count"]
        found = list(objects.get(name, []))
        credits.append(1 - abs(count - len(found)) / count)
        matched = len(found) == count
        if not matched:
            if "color" in clause or "position" in clause:
                credits.append(0.0)
        else:
            if "color" in clause:
                right = colours(found, name).count(clause["color"])
                credits.append(1 - abs(count - right) / count)
                matched = right == count
            if "position" in clause and matched:
                relation, target = clause["position"]
                group = groups[target]
                if group is None:
                    matched = False
                    credits.append(0.0)
                else:
                    if not _in_position(found, group, relation):
                        matched = False
                        credits.append(0.0)
                    credits.append(1.0)  # the server appends 1.0 after the loop either way
        strict = strict and matched
        groups.append(found if matched else None)
    return strict, (sum(credits) / len(credits) if credits else 0.0)
