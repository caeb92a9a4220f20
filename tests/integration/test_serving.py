"""Serving over real HTTP on 127.0.0.1: search and recognize on a tiny world, every bad upload, the registry
follower swapping versions under load (real SeaweedFS), and the CLI."""

from __future__ import annotations

import io
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from http_images import ImageServer, make_bomb, make_image
from PIL import Image
from serving_world import SERVE_OVERRIDES, ServingWorld, add_local_features, build_serving_world, copy_version
from typer.testing import CliRunner

from landmark.cli import app as cli_app
from landmark.config import ServeConfig
from landmark.data.images import DECODE_REASONS
from landmark.features.store import load_features
from landmark.ops.registry import Registry
from landmark.platform.storage import (
    ENV_ACCESS_KEY,
    ENV_BUCKET,
    ENV_ENDPOINT,
    ENV_SECRET_KEY,
    ObjectStore,
    S3Settings,
)
from landmark.retrieval.recognize import knn_recognition
from landmark.serving.api import VERSION_HEADER, BackgroundServer, ServingState, create_app
from landmark.serving.bundle import ServedModel, load_local, threshold_note
from landmark.serving.cache import verify_version_dir
from landmark.serving.metrics import ServingMetrics
from landmark.serving.service import ModelSlot, RegistryFollower, registry_loader
from landmark.serving.thumbs import Thumbnails, catalog_thumbnails

pytestmark = pytest.mark.integration

MAX_BYTES = 300_000
MAX_PIXELS = 4_000_000


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> ServingWorld:
    return build_serving_world(tmp_path_factory.mktemp("serving"))


@pytest.fixture(scope="module")
def served(world: ServingWorld) -> ServedModel:
    return load_local(world.cfg, world.version)


def start(served: ServedModel, cfg: ServeConfig, thumbnails: Thumbnails | None = None) -> BackgroundServer:
    """A server on a free port of 127.0.0.1 answering with ``served``."""
    state = ServingState(ModelSlot(served), cfg, thumbnails=thumbnails)
    state.metrics.served(served.version, served.model_id, int(served.db.shape[0]))
    return BackgroundServer(create_app(state)).start()


@pytest.fixture(scope="module")
def server(world: ServingWorld, served: ServedModel) -> Iterator[BackgroundServer]:
    cfg = replace(world.cfg.serve, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
    running = start(served, cfg, catalog_thumbnails(world.cfg, world.data))
    try:
        yield running
    finally:
        running.stop()


def landmark_images(world: ServingWorld, split: str) -> list[tuple[str, int]]:
    rows = world.truth[(world.truth["split"] == split) & (world.truth["true_landmark"] >= 0)]
    return list(zip(rows["image_id"], rows["true_landmark"].astype(int), strict=True))


def post_image(client: httpx.Client, path: str, data: bytes, name: str = "q.jpg") -> httpx.Response:
    return client.post(path, files={"image": (name, data, "image/jpeg")})


# --- answers ------------------------------------------------------------------------------------------------------


def test_search_and_recognize_answer_as_evaluate_does(
    world: ServingWorld, served: ServedModel, server: BackgroundServer
) -> None:
    """An index image as the query finds itself first; recognition gives the label evaluate's code gives for the
    stored descriptor of that image (one code path), and the right landmark for most of them."""
    truth = landmark_images(world, "index")
    _, stored = load_features(world.features / "index", [i for i, _ in truth])
    assert served.train is not None
    expected = knn_recognition(stored, served.train, served.recognize, served.index_cfg, seed=served.seed)
    correct = 0
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for (image_id, landmark), label in zip(truth, expected.labels, strict=True):
            data = world.image("index", image_id).read_bytes()
            found = post_image(client, "/search?top=3", data)
            assert found.status_code == 200, found.text
            body = found.json()
            assert body["version"] == served.version == found.headers[VERSION_HEADER]
            assert [r["rank"] for r in body["results"]] == [1, 2, 3]
            assert body["results"][0]["image_id"] == image_id and body["results"][0]["score"] > 0.9
            recognized = post_image(client, "/recognize", data).json()
            assert recognized["version"] == served.version and recognized["predicted"] == label
            assert recognized["accepted"] == (recognized["confidence"] > served.threshold)
            correct += recognized["landmark"] == landmark or recognized["predicted"] == landmark
    assert correct >= len(truth) // 2, f"only {correct}/{len(truth)} index images recognised"


def test_a_train_image_is_recognised_as_its_landmark_with_results(
    world: ServingWorld, served: ServedModel, server: BackgroundServer
) -> None:
    assert served.threshold is not None and served.threshold == world_threshold(world)
    train = landmark_images(world, "train")
    with httpx.Client(base_url=server.url, timeout=30) as client:
        answers = [
            client.post(
                "/recognize?top=2",
                content=world.image("train", image_id).read_bytes(),
                headers={"content-type": "image/jpeg"},
            ).json()
            for image_id, _ in train[::3]
        ]
    assert all(len(a["results"]) == 2 and a["results"][0]["score"] > 0 for a in answers)
    correct = sum(a["predicted"] == landmark for a, (_, landmark) in zip(answers, train[::3], strict=True))
    assert correct >= 0.75 * len(answers), f"{correct}/{len(answers)} train images recognised"


def world_threshold(world: ServingWorld) -> float:
    return float(json.loads((world.version / "metrics.json").read_text())["recognition"]["threshold"])


# --- bad input ----------------------------------------------------------------------------------------------------


def truncated_jpeg() -> bytes:
    data = make_image(5, (160, 120))
    return data[: len(data) // 2]


BAD_UPLOADS = {
    "empty file": (lambda: b"", 400, "empty"),
    "not an image": (lambda: b"hello, this is text" * 10, 415, "not_an_image"),
    "truncated": (truncated_jpeg, 422, "truncated"),
    "over the byte limit": (lambda: make_image(3, (64, 64)) + b"\0" * MAX_BYTES, 413, "too_large"),
    "over the pixel limit": (lambda: make_image(4, (2400, 1800)), 413, "too_large"),
    "decompression bomb": (lambda: make_bomb(3000), 413, "too_large"),
    "corrupt": (lambda: make_image(6)[:200] + b"\xff" * 400 + make_image(6)[600:], 422, None),
}


@pytest.mark.parametrize("case", sorted(BAD_UPLOADS))
def test_bad_uploads_get_a_4xx_with_the_decoder_reason(server: BackgroundServer, case: str) -> None:
    make, status, reason = BAD_UPLOADS[case]
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for endpoint in ("/search", "/recognize"):
            response = post_image(client, endpoint, make())
            body = response.json()
            if reason is None:  # a damaged JPEG body: truncated or corrupt, whichever the decoder meets first
                assert response.status_code == 422 and body["error"] in ("truncated", "corrupt"), body
            else:
                assert (response.status_code, body["error"]) == (status, reason), body
            assert body["error"] in DECODE_REASONS and body["detail"]


def test_malformed_requests_are_refused_not_crashed(server: BackgroundServer, world: ServingWorld) -> None:
    image = make_image(1)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        cases = [
            (client.post("/search"), 400, "empty"),  # no body at all
            (client.post("/search", data={"other": "x"}, files={"x": ("a", b"a")}), 400, "missing_image"),
            (
                client.post("/search", files={"image": ("q.jpg", image)}, data={"url": "http://x/"}),
                400,
                "ambiguous_input",
            ),
            (client.post("/search", json={"url": "http://127.0.0.1:9/a.jpg"}), 403, "urls_disabled"),
            (client.post("/search?top=abc", content=image), 400, "bad_top"),
            (client.post("/search?top=1000", content=image), 400, "bad_top"),
            (
                client.post(
                    "/search",
                    content=b"--x\r\nbroken",
                    headers={"content-type": "multipart/form-data; boundary=x"},
                ),
                400,
                None,
            ),
        ]
        for response, status, reason in cases:
            assert response.status_code == status, response.text
            if reason is not None:
                assert response.json()["error"] == reason
        metrics = client.get("/metrics").text
    assert 'landmark_serving_errors_total{endpoint="search",reason="bad_top"} 2.0' in metrics
    assert "landmark_serving_request_seconds_bucket" in metrics
    assert "landmark_serving_model_info{model_id=" in metrics


def test_image_urls_are_fetched_only_when_allowed(
    world: ServingWorld, served: ServedModel, image_server: ImageServer
) -> None:
    image_id, _ = landmark_images(world, "index")[0]
    image_server.images["q.jpg"] = world.image("index", image_id).read_bytes()
    cfg = replace(world.cfg.serve, allow_urls=True, url_hosts=("127.0.0.1",), max_pixels=MAX_PIXELS)
    running = start(served, cfg)
    try:
        with httpx.Client(base_url=running.url, timeout=30) as client:
            good = client.post("/search", json={"url": image_server.url("/img/q.jpg")})
            assert good.status_code == 200 and good.json()["results"][0]["image_id"] == image_id
            form = client.post("/search", data={"url": image_server.url("/img/q.jpg")})
            assert form.status_code == 200
            bomb = client.post("/search", json={"url": image_server.url("/bomb.png")})
            assert (bomb.status_code, bomb.json()["error"]) == (413, "too_large")
            other = client.post("/search", json={"url": "http://localhost:1/x.jpg"})
            assert (other.status_code, other.json()["error"]) == (403, "url_host_not_allowed")
            missing = client.post("/search", json={"url": image_server.url("/missing.jpg")})
            assert (missing.status_code, missing.json()["error"]) == (422, "http_error")
    finally:
        running.stop()


# --- following the registry ---------------------------------------------------------------------------------------


def test_promotion_and_rollback_under_load_fail_no_request(
    world: ServingWorld, object_store: ObjectStore, tmp_path: Path
) -> None:
    registry = Registry(object_store, "registry")
    first = registry.publish(world.version / "model", world.version / "index", {"name": "first"})
    other = copy_version(world, tmp_path / "other", tweak="second")
    second = registry.publish(other / "model", other / "index", {"name": "second"})
    registry.switch(first)

    def read_pointer() -> str | None:
        pointer = registry.production()
        return None if pointer is None else pointer.version

    cache = tmp_path / "cache"
    metrics = ServingMetrics()
    loader = registry_loader(world.cfg, registry, cache)
    follower = RegistryFollower(ModelSlot(), read_pointer, loader, 0.2, metrics=metrics, retry_s=60.0)
    assert follower.check() and follower.slot.get() is not None
    follower.start()
    running = BackgroundServer(
        create_app(ServingState(follower.slot, world.cfg.serve, metrics, follower))
    ).start()
    data = world.image("index", landmark_images(world, "index")[0][0]).read_bytes()
    seen: list[tuple[int, str | None]] = []
    stop = threading.Event()

    def client_loop() -> None:
        with httpx.Client(base_url=running.url, timeout=30) as client:
            while not stop.is_set():
                response = post_image(client, "/search?top=2", data)
                body = response.json()
                seen.append((response.status_code, body.get("version")))
                assert body.get("version") == response.headers.get(VERSION_HEADER)

    def wait_for(version: str) -> None:
        deadline = time.monotonic() + 60
        while not (seen and seen[-1][1] == version):
            assert time.monotonic() < deadline, f"{version} never served; last {seen[-3:]}"
            time.sleep(0.05)

    thread = threading.Thread(target=client_loop)
    thread.start()
    try:
        wait_for(first)
        registry.switch(second)
        wait_for(second)
        registry.rollback()
        wait_for(first)
        # a complete but broken version: the load fails, the old one keeps serving, /healthz says why
        broken = tmp_path / "broken"
        copy_version(world, broken, tweak="broken")
        (broken / "model" / "weights.pt").write_bytes(b"not a torch file")
        bad = registry.publish(broken / "model", broken / "index", {"name": "broken"})
        registry.switch(bad)
        deadline = time.monotonic() + 60
        while (follower.failure is None) and time.monotonic() < deadline:
            time.sleep(0.05)
        health = httpx.get(f"{running.url}/healthz", timeout=30)
        n_before = len(seen)
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join(timeout=60)
        running.stop()
        follower.stop()
    assert seen and all(status == 200 for status, _ in seen), [s for s in seen if s[0] != 200][:5]
    versions = [v for _, v in seen]
    assert set(versions) == {first, second}
    changes = [v for i, v in enumerate(versions) if i == 0 or versions[i - 1] != v]
    assert changes == [first, second, first]  # each swap happened once, in order; no mixing back and forth
    assert len(seen) > n_before and versions[-1] == first  # still serving the old version after the failure
    body = health.json()
    assert health.status_code == 200 and body["status"] == "degraded" and body["version"] == first
    assert body["registry"]["production"] == bad and body["registry"]["load_error"]["version"] == bad
    assert body["index_size"] == int(len(landmark_images(world, "index")) + world.cfg.synth.index_distractors)
    assert {first, second, bad} == {p.name for p in cache.iterdir()}  # each downloaded once, kept verified
    assert verify_version_dir(cache / first) and verify_version_dir(cache / second)


# --- the CLI ------------------------------------------------------------------------------------------------------


def cli_args() -> list[str]:
    return [arg for override in SERVE_OVERRIDES for arg in ("--set", override)]


def test_cli_search_json_from_a_local_version(world: ServingWorld) -> None:
    image_id, _ = landmark_images(world, "index")[0]
    path = world.image("index", image_id)
    result = CliRunner().invoke(
        cli_app, [*cli_args(), "search", "--json", "--top", "3", "--local", str(world.version), str(path)]
    )
    assert result.exit_code == 0, result.output
    [answer] = json.loads(result.stdout)
    assert answer["version"] == f"local:{world.version}" and answer["image"] == str(path)
    assert [r["rank"] for r in answer["results"]] == [1, 2, 3] and answer["results"][0][
        "image_id"
    ] == image_id


def test_cli_search_and_recognize_from_the_registry(
    world: ServingWorld, object_store: ObjectStore, s3_settings: S3Settings, tmp_path: Path
) -> None:
    registry = Registry(object_store, "registry")
    version = registry.publish(
        world.version / "model",
        world.version / "index",
        json.loads((world.version / "metrics.json").read_text()),
    )
    registry.switch(version)
    env = {
        ENV_ENDPOINT: s3_settings.endpoint,
        ENV_BUCKET: s3_settings.bucket,
        ENV_ACCESS_KEY: s3_settings.credentials.access_key,
        ENV_SECRET_KEY: s3_settings.credentials.secret_key,
    }
    args = [*cli_args(), "--set", f"serve.cache={tmp_path / 'cache'}"]
    image_id, _ = landmark_images(world, "index")[0]
    path = str(world.image("index", image_id))
    runner = CliRunner()
    found = runner.invoke(cli_app, [*args, "search", "--json", path], env=env)
    assert found.exit_code == 0, found.output
    assert json.loads(found.stdout)[0]["version"] == version
    assert verify_version_dir(tmp_path / "cache" / version)
    recognized = runner.invoke(cli_app, [*args, "recognize", "--json", path], env=env)
    assert recognized.exit_code == 0, recognized.output
    [answer] = json.loads(recognized.stdout)
    assert answer["version"] == version and answer["image"] == path
    landmark = answer["predicted"]
    text = runner.invoke(cli_app, [*args, "recognize", path, os.devnull], env=env, terminal_width=200)
    assert text.exit_code == 1  # the empty file fails, the photo is still answered
    assert f"{path}: " in text.stdout and str(landmark) in text.stdout and version in text.stdout
    assert "empty" in text.output
    missing = runner.invoke(
        cli_app, [*args, "search", "--version", "20250101T000000000000Z-000000000000", path], env=env
    )
    assert missing.exit_code == 1 and "missing or incomplete" in missing.output


def test_cli_spatial_verification_with_local_features(world: ServingWorld, tmp_path: Path) -> None:
    """With rerank.spatial and recognize.inliers on and the index/train local features given, results carry
    inliers (the query image itself verifies best) and the recognition uses the inlier term."""
    local_dir = add_local_features(world, tmp_path / "local")
    image_id, _ = landmark_images(world, "index")[0]
    path = str(world.image("index", image_id))
    spatial = [*cli_args(), "--set", "rerank.spatial=true", "--set", "recognize.inliers=true"]
    base = ["--json", "--local", str(world.version), "--local-features", str(local_dir), path]
    runner = CliRunner()
    found = runner.invoke(cli_app, [*spatial, "search", "--top", "4", *base])
    assert found.exit_code == 0, found.output
    [answer] = json.loads(found.stdout)
    hits = answer["results"]
    assert hits[0]["image_id"] == image_id and all(isinstance(h["inliers"], int) for h in hits)
    assert hits[0]["inliers"] == max(h["inliers"] for h in hits) > 10
    recognized = runner.invoke(cli_app, [*spatial, "recognize", *base])
    assert recognized.exit_code == 0, recognized.output
    [answer] = json.loads(recognized.stdout)
    assert answer["confidence"] > 1.0  # similarities plus inlier terms of the best label's neighbours
    served = load_local(
        replace(
            world.cfg,
            rerank=replace(world.cfg.rerank, spatial=True),
            recognize=replace(world.cfg.recognize, inliers=True),
        ),
        world.version,
        local_dir=local_dir,
    )
    assert served.verifier is not None and "spatial" in served.summary()["rerank_steps"]
    assert not any("calibrated without" in n for n in served.notes)  # evaluation did not skip verification
    skipped = {"recognition": {}, "rerank": {"notes": ["spatial verification skipped: no local features"]}}
    assert "calibrated without" in threshold_note(skipped, served.recognize)
    without = load_local(replace(world.cfg, rerank=replace(world.cfg.rerank, spatial=True)), world.version)
    assert without.verifier is None and not without.rerank.spatial
    assert any("spatial verification skipped" in n for n in without.notes)


def test_healthz_and_metrics_name_the_version(served: ServedModel, server: BackgroundServer) -> None:
    health = httpx.get(f"{server.url}/healthz", timeout=30)
    body = health.json()
    assert health.status_code == 200 and body["status"] == "ok" and body["version"] == served.version
    assert body["model_id"] == served.model_id and body["index_size"] == served.db.shape[0]
    assert body["served"]["threshold"] == served.threshold
    metrics = httpx.get(f"{server.url}/metrics", timeout=30).text
    assert f'version="{served.version}"' in metrics and "landmark_serving_index_size" in metrics
    [size] = [
        line.split()[1] for line in metrics.splitlines() if line.startswith("landmark_serving_index_size ")
    ]
    assert float(size) == served.db.shape[0]


# --- the page -----------------------------------------------------------------------------------------------------


def test_page_and_thumbnails(world: ServingWorld, served: ServedModel, server: BackgroundServer) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        page = client.get("/")
        assert page.status_code == 200 and 'id="drop"' in page.text and "/recognize?top=" in page.text
        thumb = client.get(f"/thumbs/{served.ids[0]}")
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
        with Image.open(io.BytesIO(thumb.content)) as image:
            assert max(image.size) <= 256
        train_id = landmark_images(world, "train")[0][0]
        for image_id in (train_id, "no-such-image"):  # only images of the served index
            refused = client.get(f"/thumbs/{image_id}")
            assert (refused.status_code, refused.json()["error"]) == (404, "unknown_image")


@pytest.mark.skipif(
    not (Path("/usr/bin/chromium").is_file() and Path("/usr/bin/chromedriver").is_file()),
    reason="needs Debian's chromium and chromium-driver",
)
def test_the_page_in_a_headless_browser(
    world: ServingWorld, server: BackgroundServer, tmp_path: Path
) -> None:
    """Pick a photo in real Chromium: the recognised landmark, the version and eight loaded thumbnails show."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1300,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    try:
        driver.get(server.url)
        image_id, _ = landmark_images(world, "index")[0]
        driver.find_element(By.ID, "file").send_keys(str(world.image("index", image_id).resolve()))
        thumbs_loaded = (
            "const imgs = [...document.querySelectorAll('#results img')];"
            "return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0) ? imgs.length : 0;"
        )
        count = WebDriverWait(driver, 60).until(lambda d: d.execute_script(thumbs_loaded))
        answer = driver.find_element(By.ID, "answer").text
        driver.save_screenshot(str(tmp_path / "serving_page.png"))
        assert count == 8
        assert "answered by version local:" in answer and ("Landmark" in answer or "No landmark" in answer)
        assert "serving version local:" in driver.find_element(By.ID, "version").text
        assert image_id in driver.find_element(By.ID, "results").text  # the photo itself is the first result
    finally:
        driver.quit()
