"""Planning the synthetic world: which landmarks, facets and photos exist, their ids, labels and label noise.

The plan is cheap, made in one process from the seed, and fully determines the dataset: every photo carries the
seed material (``entropy``) of its own generator, so rendering order and worker count never change the output.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from landmark.errors import InputError
from landmark.config import SynthConfig
from landmark.data.synthetic.textures import FAMILIES

# Stream tags keep the generators of different purposes independent: SeedSequence([seed, STREAM, ...]).
STREAM_PLAN = 1
STREAM_IDS = 2
STREAM_FACET = 3
STREAM_PHOTO = 4

SPLIT_CODES: dict[str, int] = {"train": 1, "index": 2, "test": 3}

# Planned viewpoint mix of a landmark's index photos (the rest are easy) and of train photos.
INDEX_HARD_SHARE = 0.35
INDEX_JUNK_SHARE = 0.15
TRAIN_LEVEL_PROBS: tuple[float, float, float] = (0.55, 0.37, 0.08)  # easy, hard, junk

# Share of facets that join two families (more distinct layouts than the families alone give).
COMPOSITE_SHARE = 0.65
# Facet k of a landmark appears in photos with weight 1 / (k + 1) ** FACET_WEIGHT_POWER: facet 0 is the famous view.
FACET_WEIGHT_POWER = 2.5

NOISE_KINDS: tuple[str, ...] = ("none", "wrong_label", "junk_labelled")


@dataclass(frozen=True)
class LandmarkSpec:
    """One landmark: its id and the family of each of its facets (facet ``k`` is ``families[k]``)."""

    landmark_id: int
    families: tuple[str, ...]


@dataclass(frozen=True)
class PhotoSpec:
    """Everything needed to render one photo.

    Attributes:
        image_id: 16 hex characters.
        split: ``train``, ``index`` or ``test``.
        landmark: the landmark really shown (-1 for non-landmark photos).
        facet: which of its facets (-1 for none).
        family: the facet's family (empty for non-landmark photos).
        label: the label written to the CSV for train (may be noisy); the true landmark for index/test.
        noise: ``none``, ``wrong_label`` or ``junk_labelled``.
        level: planned viewpoint ``easy``, ``hard``, ``junk``, or ``distractor`` for non-landmark photos.
        entropy: seed material of the photo's generator.
    """

    image_id: str
    split: str
    landmark: int
    facet: int
    family: str
    label: int
    noise: str
    level: str
    entropy: tuple[int, ...]


@dataclass(frozen=True)
class WorldPlan:
    """The full plan; the photo tuples are in CSV row order."""

    seed: int
    landmarks: tuple[LandmarkSpec, ...]
    train: tuple[PhotoSpec, ...]
    index: tuple[PhotoSpec, ...]
    test: tuple[PhotoSpec, ...]

    def split(self, name: str) -> tuple[PhotoSpec, ...]:
        """The photos of split ``name``."""
        if name not in SPLIT_CODES:
            raise InputError(f"unknown split {name!r}; expected one of {tuple(SPLIT_CODES)}")
        photos: tuple[PhotoSpec, ...] = getattr(self, name)
        return photos

    def all_photos(self) -> tuple[PhotoSpec, ...]:
        """Train, index and test photos, in that order."""
        return self.train + self.index + self.test


# A photo before it has an id: (landmark, facet, label, noise, level).
_Draft = tuple[int, int, int, str, str]


def facet_weights(num_facets: int) -> np.ndarray:
    """Probability of each facet appearing in a photo, (num_facets,): facet 0 is the famous view."""
    w = 1.0 / np.arange(1, num_facets + 1, dtype=np.float64) ** FACET_WEIGHT_POWER
    return w / w.sum()


def noise_counts(cfg: SynthConfig) -> tuple[int, int]:
    """Exact numbers of wrongly labelled and junk train photos: ``round(fraction * n_train)`` each."""
    n_train = cfg.num_landmarks * cfg.train_per_landmark
    return round(cfg.label_noise * n_train), round(cfg.junk_noise * n_train)


def hard_query_count(cfg: SynthConfig) -> int:
    """Exact number of hard landmark queries: ``round(hard_query_fraction * queries)``."""
    return round(cfg.hard_query_fraction * cfg.queries)


def plan_landmarks(rng: np.random.Generator, cfg: SynthConfig) -> tuple[LandmarkSpec, ...]:
    """Landmarks ``0 .. num_landmarks - 1``. Each facet is one family or a composite of two
    (:data:`COMPOSITE_SHARE`); the facets of one landmark use distinct families while there are enough."""
    out = []
    for lid in range(cfg.num_landmarks):
        n = int(rng.integers(cfg.facets_min, cfg.facets_max + 1))
        order = [FAMILIES[int(i)] for i in rng.permutation(len(FAMILIES))]
        families = []
        used = 0
        for _ in range(n):
            take = 2 if rng.random() < COMPOSITE_SHARE else 1
            families.append("+".join(order[(used + k) % len(order)] for k in range(take)))
            used += take
        out.append(LandmarkSpec(lid, tuple(families)))
    return tuple(out)


def _facets_for(rng: np.random.Generator, num_facets: int, count: int, *, cover_all: bool) -> list[int]:
    """``count`` facet choices drawn by :func:`facet_weights`, after a guaranteed first photo of every facet
    (``cover_all``, as far as ``count`` allows) or of facet 0 only."""
    weights = facet_weights(num_facets)
    if count < num_facets and cover_all:
        return [int(f) for f in rng.choice(num_facets, size=count, replace=False, p=weights)]
    head = list(range(num_facets)) if cover_all else [0]
    extra = rng.choice(num_facets, size=count - len(head), p=weights)
    return head + [int(f) for f in extra]


def _index_drafts(rng: np.random.Generator, lm: LandmarkSpec, n: int) -> list[_Draft]:
    n_junk = round(INDEX_JUNK_SHARE * n)
    n_hard = round(INDEX_HARD_SHARE * n)
    n_easy = n - n_junk - n_hard
    facets = _facets_for(rng, len(lm.families), n, cover_all=False)
    # The first photo of each facet takes an easy view while there are any, so each facet shown is findable.
    first = sorted({f: i for i, f in reversed(list(enumerate(facets)))}.values())
    rest = [i for i in range(n) if i not in first]
    pool = ["easy"] * n_easy + ["hard"] * n_hard + ["junk"] * n_junk
    tail = pool[len(first) :]
    rng.shuffle(tail)
    levels = [""] * n
    for i, lvl in zip(first + rest, pool[: len(first)] + tail, strict=True):
        levels[i] = lvl
    return [(lm.landmark_id, f, lm.landmark_id, "none", lvl) for f, lvl in zip(facets, levels, strict=True)]


def _train_drafts(
    rng: np.random.Generator, landmarks: tuple[LandmarkSpec, ...], cfg: SynthConfig
) -> list[_Draft]:
    drafts: list[_Draft] = []
    levels = ("easy", "hard", "junk")
    for lm in landmarks:
        facets = _facets_for(rng, len(lm.families), cfg.train_per_landmark, cover_all=True)
        for f in facets:
            lvl = levels[int(rng.choice(3, p=np.asarray(TRAIN_LEVEL_PROBS)))]
            drafts.append((lm.landmark_id, f, lm.landmark_id, "none", lvl))
    n_wrong, n_junk = noise_counts(cfg)
    order = rng.permutation(len(drafts))
    for i in order[:n_wrong]:
        lid, f, _, _, lvl = drafts[int(i)]
        other = int(rng.integers(cfg.num_landmarks - 1))
        wrong = other if other < lid else other + 1  # uniform over the other landmarks
        drafts[int(i)] = (lid, f, wrong, "wrong_label", lvl)
    for i in order[n_wrong : n_wrong + n_junk]:
        _, _, label, _, _ = drafts[int(i)]
        drafts[int(i)] = (-1, -1, label, "junk_labelled", "distractor")
    return drafts


def _test_drafts(
    rng: np.random.Generator,
    landmarks: tuple[LandmarkSpec, ...],
    findable: dict[int, list[int]],
    cfg: SynthConfig,
) -> list[_Draft]:
    """Landmark queries spread evenly over the landmarks, each of a facet with an easy index view
    (``findable[landmark]``), chosen by :func:`facet_weights`; then the non-landmark queries."""
    reps = -(-cfg.queries // cfg.num_landmarks)
    owners = np.concatenate([rng.permutation(cfg.num_landmarks) for _ in range(reps)])[: cfg.queries]
    hard = set(rng.permutation(cfg.queries)[: hard_query_count(cfg)].tolist())
    drafts: list[_Draft] = []
    for q, lid in enumerate(owners):
        lm = landmarks[int(lid)]
        options = findable.get(lm.landmark_id) or list(range(len(lm.families)))
        weights = facet_weights(len(lm.families))[options]
        f = options[int(rng.choice(len(options), p=weights / weights.sum()))]
        drafts.append((lm.landmark_id, f, lm.landmark_id, "none", "hard" if q in hard else "easy"))
    drafts += [(-1, -1, -1, "none", "distractor")] * cfg.test_distractors
    return drafts


def make_ids(seed: int, count: int) -> list[str]:
    """``count`` distinct 16-hex-character image ids, deterministic in ``seed``."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, STREAM_IDS]))
    ids: list[str] = []
    seen: set[str] = set()
    while len(ids) < count:
        for value in rng.integers(0, 2**64, size=count - len(ids), dtype=np.uint64):
            text = f"{int(value):016x}"
            if text not in seen:
                seen.add(text)
                ids.append(text)
    return ids


def plan_world(cfg: SynthConfig, seed: int) -> WorldPlan:
    """Plan the whole dataset.

    Train: ``train_per_landmark`` photos per landmark, of which exactly :func:`noise_counts` carry a wrong label
    or are junk (non-landmark) photos labelled as a landmark. Index: ``index_per_landmark`` photos per landmark
    (easy, hard and junk views spread over the facets) plus ``index_distractors``. Test: ``queries`` landmark
    queries (:func:`hard_query_count` of them hard) plus ``test_distractors``. Each split's rows are shuffled.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, STREAM_PLAN]))
    landmarks = plan_landmarks(rng, cfg)
    train = _train_drafts(rng, landmarks, cfg)
    index = [d for lm in landmarks for d in _index_drafts(rng, lm, cfg.index_per_landmark)]
    index += [(-1, -1, -1, "none", "distractor")] * cfg.index_distractors
    findable: dict[int, list[int]] = {}
    for lid, facet, _, _, level in index:
        if level == "easy" and facet not in findable.setdefault(lid, []):
            findable[lid].append(facet)
    test = _test_drafts(rng, landmarks, {k: sorted(v) for k, v in findable.items()}, cfg)
    ids = iter(make_ids(seed, len(train) + len(index) + len(test)))
    splits: dict[str, tuple[PhotoSpec, ...]] = {}
    for name, drafts in (("train", train), ("index", index), ("test", test)):
        order = rng.permutation(len(drafts))
        photos = []
        for row, i in enumerate(order):
            lid, facet, label, noise, level = drafts[int(i)]
            family = landmarks[lid].families[facet] if facet >= 0 else ""
            entropy = (seed, STREAM_PHOTO, SPLIT_CODES[name], row)
            photos.append(PhotoSpec(next(ids), name, lid, facet, family, label, noise, level, entropy))
        splits[name] = tuple(photos)
    return WorldPlan(seed, landmarks, splits["train"], splits["index"], splits["test"])
