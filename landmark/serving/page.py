"""The page ``GET /`` serves: pick or drop a photo, see the recognised landmark and the top results.

One static HTML document with a little JavaScript: it posts the photo to ``/recognize?top=N`` (one request:
recognition plus the search results of the same descriptor) and shows the answer with thumbnails that the
server renders from the catalog (``/thumbs/<image id>``); the browser never talks to the object store. Every
value from the server is inserted as text, never as HTML.
"""

from __future__ import annotations

RESULTS_ON_PAGE = 8

PAGE_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Landmark search</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 70rem; color: #222; padding: 0 1rem; }
  h1 { font-size: 1.5rem; margin-bottom: .2rem; }
  #version { color: #666; font-size: .9rem; }
  #drop { display: block; border: 2px dashed #999; border-radius: 8px; padding: 1.5rem; text-align: center; margin: 1rem 0;
          background: #fafafa; cursor: pointer; }
  #drop.over { background: #e8f0fe; border-color: #3367d6; }
  #query { max-height: 12rem; margin-top: .8rem; display: none; }
  #answer { font-size: 1.2rem; margin: 1rem 0; min-height: 1.5rem; }
  #answer .none { color: #a15c00; }
  #answer .error { color: #b00020; }
  #results { display: grid; grid-template-columns: repeat(auto-fill, minmax(11rem, 1fr)); gap: .8rem; }
  .card { border: 1px solid #ddd; border-radius: 6px; padding: .4rem; font-size: .85rem; background: #fff; }
  .card img { width: 100%; height: 8rem; object-fit: cover; background: #eee; display: block; }
  .card .id { font-family: monospace; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
</style>
</head>
<body>
<h1>Landmark search</h1>
<div id="version">loading...</div>
<label id="drop" for="file">Drop a photo here, or click to pick one
  <input id="file" type="file" accept="image/*" hidden>
  <div><img id="query" alt="your photo"></div>
</label>
<div id="answer"></div>
<div id="results"></div>
<script>
const TOP = __TOP__;
const el = (tag, cls, text) => {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
};
async function showVersion() {
  try {
    const health = await (await fetch("/healthz")).json();
    document.getElementById("version").textContent = health.version
      ? `serving version ${health.version} - model ${health.model_id} - ${health.index_size} images indexed`
      : "no model in service yet";
  } catch (err) {
    document.getElementById("version").textContent = "server unreachable";
  }
}
function showAnswer(body) {
  const answer = document.getElementById("answer");
  answer.replaceChildren();
  if (body.error) {
    answer.append(el("span", "error", `refused (${body.error}): ${body.detail}`));
    return;
  }
  if (body.accepted) {
    answer.append(el("span", "landmark", `Landmark ${body.landmark}`),
                  el("span", "", ` - confidence ${body.confidence.toFixed(3)}`));
  } else {
    const best = body.predicted === null ? "" : ` (best guess ${body.predicted}, confidence ${body.confidence.toFixed(3)})`;
    answer.append(el("span", "none", "No landmark" + best));
  }
  answer.append(el("div", "", `answered by version ${body.version} in ${(body.seconds * 1000).toFixed(0)} ms`));
  const results = document.getElementById("results");
  results.replaceChildren();
  for (const hit of body.results || []) {
    const card = el("div", "card");
    const img = el("img");
    img.alt = hit.image_id;
    img.src = "/thumbs/" + encodeURIComponent(hit.image_id);
    card.append(img, el("div", "id", `#${hit.rank} ${hit.image_id}`));
    const landmark = hit.landmark === null ? "unknown" : `${hit.landmark}${hit.landmark_source === "predicted" ? " (predicted)" : ""}`;
    card.append(el("div", "", `landmark ${landmark}`), el("div", "score", `score ${hit.score.toFixed(3)}`));
    if (hit.inliers !== null) card.append(el("div", "", `inliers ${hit.inliers}`));
    results.append(card);
  }
}
async function query(file) {
  const preview = document.getElementById("query");
  preview.src = URL.createObjectURL(file);
  preview.style.display = "inline";
  document.getElementById("answer").textContent = "searching...";
  document.getElementById("results").replaceChildren();
  const form = new FormData();
  form.append("image", file, file.name);
  try {
    let body = await (await fetch(`/recognize?top=${TOP}`, { method: "POST", body: form })).json();
    if (body.error === "recognition_unavailable") {  // a version without a train set still searches
      body = await (await fetch(`/search?top=${TOP}`, { method: "POST", body: form })).json();
      if (!body.error) Object.assign(body, { accepted: false, predicted: null, confidence: 0 });
    }
    showAnswer(body);
  } catch (err) {
    showAnswer({ error: "network", detail: String(err) });
  }
}
const drop = document.getElementById("drop");
document.getElementById("file").addEventListener("change", (e) => e.target.files[0] && query(e.target.files[0]));
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  if (e.dataTransfer.files[0]) query(e.dataTransfer.files[0]);
});
showVersion();
</script>
</body>
</html>
""".replace("__TOP__", str(RESULTS_ON_PAGE))
