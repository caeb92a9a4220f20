"""Distillation on unlabeled real photos (train.distill_real): the relational term, the batch plan, and a
training run that keeps the pretrained similarity structure of the photos and resumes exactly."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from landmark.config import ModelConfig, TrainConfig
from landmark.models.global_model import create_global_model
from landmark.training.distill import batch_plan, image_sizes, photo_paths, relational_loss
from landmark.training.loop import TrainItem, _freeze_batchnorm, train_global_model
from landmark.training.sampling import assign_templates

MODEL = ModelConfig(backbone="efficientnet_lite0", pretrained="packaged", embedding_dim=32)
TRAIN = TrainConfig(
    epochs=6, batch_size=4, image_size=64, full_res_last_epoch=False, augmentation="soft", warmup_steps=2,
    lr=0.05, checkpoint_every=0, workers=0, scale=16.0, neck_init_images=32, neck_whiten=False,
    head_init="random", wise_alpha=1.0, frozen_fraction=0.8, distill_real_batch=6,
)  # fmt: skip


def test_relational_loss_hand_computed_and_invariant_to_the_students_space() -> None:
    student = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    teacher = torch.tensor([[2.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    # student cosine 0, teacher cosine 1: both off-diagonal entries differ by 1
    assert relational_loss(student, teacher).item() == pytest.approx(1.0)
    three = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    target = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    # student cosines (0, 1/sqrt2, 1/sqrt2), teacher all 1: mean of 2 * ((1)^2 + 2 (1 - 1/sqrt2)^2) / 6
    expected = (1.0 + 2 * (1 - 2**-0.5) ** 2) / 3.0
    assert relational_loss(three, target).item() == pytest.approx(expected, abs=1e-6)
    rotation = torch.tensor([[0.6, -0.8], [0.8, 0.6]])
    assert relational_loss(3.0 * three @ rotation, target).item() == pytest.approx(expected, abs=1e-6)
    assert relational_loss(three, three).item() == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="N >= 2"):
        relational_loss(three[:1], target[:1])


def test_gradient_flows_into_the_student_only() -> None:
    student = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    teacher = torch.tensor([[1.0, 0.0], [1.0, 0.0]], requires_grad=True)
    relational_loss(student, teacher).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


def _photos(root: Path, count: int, seed: int, sizes: tuple[tuple[int, int], ...]) -> list[Path]:
    """Blobs of colour at a few sizes, unlabeled."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for k in range(count):
        w, h = sizes[k % len(sizes)]
        yy, xx = np.mgrid[0:h, 0:w]
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * rng.uniform(5, 25) ** 2))
        image = blob[..., None] * rng.uniform(40, 255, 3) + rng.normal(0, 15, (h, w, 3)) + 30
        path = root / f"photo_{k:02d}.png"
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def test_photo_paths_finds_samples_notes_missing_folders_and_rejects(tmp_path: Path) -> None:
    made = _photos(tmp_path / "a" / "deep", 5, 0, ((40, 30),)) + _photos(tmp_path / "b", 3, 1, ((40, 30),))
    (tmp_path / "b" / "notes.txt").write_text("not a photo")
    assert photo_paths([tmp_path / "a", tmp_path / "b"], 100, 0) == (sorted(made), [])
    sample, _ = photo_paths([tmp_path / "a", tmp_path / "b"], 4, 0)
    assert len(sample) == 4 and sample == sorted(sample) and set(sample) <= set(made)
    assert photo_paths([tmp_path / "a", tmp_path / "b"], 4, 0)[0] == sample  # seeded
    # the shared photos are optional: a missing folder is a note, and with none left there is nothing to distill
    found, notes = photo_paths([tmp_path / "missing", tmp_path / "b"], 10, 0)
    assert found == sorted(made[5:]) and len(notes) == 1 and "no folder" in notes[0]
    assert photo_paths([tmp_path / "missing"], 10, 0)[0] == []
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="at least 2 photos"):
        photo_paths([tmp_path / "empty"], 10, 0)
    assert image_sizes(made[:2]) == ([40, 40], [30, 30])
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(ValueError, match="cannot read"):
        image_sizes([tmp_path / "broken.jpg"])


def test_batch_plan_is_seeded_per_rank_and_keeps_one_template_per_batch() -> None:
    widths = [64, 64, 64, 48, 48, 48, 48, 30]
    heights = [48, 48, 48, 64, 64, 64, 64, 60]
    plan = batch_plan(widths, heights, 64, 3, 20, seed=0)
    assert len(plan) == 20
    assert plan == batch_plan(widths, heights, 64, 3, 20, seed=0)
    assert plan != batch_plan(widths, heights, 64, 3, 20, seed=0, rank=1)
    templates = assign_templates(widths, heights)
    for position, batch in enumerate(plan):
        items = [s.item for s in batch]
        assert len(items) == len(set(items)) == 3  # distinct photos, a full batch
        assert len({int(templates[i]) for i in items}) == 1
        assert len({(s.height, s.width) for s in batch}) == 1
        assert all(s.position == position for s in batch)
    assert 7 not in {s.item for b in plan for s in b}  # alone in its template: no relation to keep
    with pytest.raises(ValueError, match="share a size template"):
        batch_plan([64, 30], [48, 60], 64, 3, 2, seed=0)


@pytest.fixture(scope="module")
def labelled(
    tmp_path_factory: pytest.TempPathFactory, stripe_items: Callable[[Path, int, float], list[TrainItem]]
) -> list[TrainItem]:
    """4 classes x 4 stripe images."""
    return stripe_items(tmp_path_factory.mktemp("labelled"), 4, 6.3)


def _relations_drift(model: torch.nn.Module, photos: list[Path]) -> float:
    """Relational loss of ``model``'s embeddings of the photos against the pretrained GeM descriptors."""
    images = torch.stack(
        [torch.from_numpy(np.array(Image.open(p).convert("RGB").resize((64, 48)))).permute(2, 0, 1) for p in photos]
    ).float() / 255.0  # fmt: skip
    pretrained = create_global_model(MODEL).eval()
    model.eval()
    _freeze_batchnorm(model)
    with torch.no_grad():
        return float(relational_loss(model.embed(images), pretrained.pooled(images)))  # type: ignore[operator]


def test_training_keeps_the_real_photos_relations_and_resumes(
    labelled: list[TrainItem], tmp_path: Path
) -> None:
    photos = _photos(tmp_path / "real", 8, 3, ((64, 48),))
    plain = train_global_model(
        labelled, 4, MODEL, TRAIN, tmp_path / "plain", seed=0, device="cpu", progress=False
    )
    cfg = dataclasses.replace(
        TRAIN, distill_real=(str(tmp_path / "real"),), distill_real_weight=20.0, checkpoint_every=4
    )
    kept = train_global_model(labelled, 4, MODEL, cfg, tmp_path / "kd", seed=0, device="cpu", progress=False)
    kept_state = {k: v.clone() for k, v in kept.model.state_dict().items()}
    plain_drift, kept_drift = _relations_drift(plain.model, photos), _relations_drift(kept.model, photos)
    # measured: 0.106 plain, 0.043 with the term (after 2 epochs neither has moved much: 0.122 / 0.124)
    assert kept_drift < 0.6 * plain_drift, (plain_drift, kept_drift)

    # killed after 10 steps and resumed: the teacher is the pretrained model again and the photo batches continue
    cut = tmp_path / "cut"
    train_global_model(
        labelled, 4, MODEL, dataclasses.replace(cfg, max_steps=10), cut, seed=0, device="cpu", progress=False
    )
    resumed = train_global_model(
        labelled, 4, MODEL, cfg, cut, seed=0, device="cpu", resume=True, progress=False
    )
    assert resumed.steps == kept.steps == 24
    for key, value in kept_state.items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=0, atol=1e-6, msg=key)


def test_neck_whitens_auto_follows_real_photo_distillation() -> None:
    from landmark.config import ConfigError, load_config
    from landmark.training.loop import neck_whitens

    auto = TrainConfig()
    assert auto.neck_whiten == "auto"
    assert neck_whitens(auto, distilling=False) is True  # whitened: the better neck without real photos
    assert neck_whitens(auto, distilling=True) is False  # un-whitened: the better one with them
    for fixed in (True, False):
        cfg = dataclasses.replace(auto, neck_whiten=fixed)
        assert neck_whitens(cfg, distilling=True) is fixed and neck_whitens(cfg, distilling=False) is fixed
    assert load_config(None, ["train.neck_whiten=false"]).train.neck_whiten is False
    with pytest.raises(ConfigError, match="neck_whiten"):
        load_config(None, ["train.neck_whiten=sometimes"])
