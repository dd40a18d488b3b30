// The demo page: every answer comes from the endpoint's /v1 routes, so it works with any model.
"use strict";

const EXAMPLES = [
  "Alice Johnson flew from Paris to work for Acme Corp in Berlin.",
  "What a wonderful, heartfelt film: I loved every minute of it.",
  "The service at the Lisbon branch of Deutsche Bank was slow and rude.",
];

const state = { model: null, inspected: null };
const $ = (id) => document.getElementById(id);

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// POST or GET a /v1 route; an error status becomes an Error whose message the page shows
async function call(path, body) {
  const options = body === undefined ? {} : {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
  };
  let response;
  try {
    response = await fetch(path, options);
  } catch (failure) {
    throw new Error(`the endpoint cannot be reached (${failure.message})`);
  }
  let answer = null;
  try { answer = await response.json(); } catch (_) { /* a body that is not JSON: reported below */ }
  if (!response.ok) {
    const reason = answer && answer.error ? answer.error : response.statusText;
    const hint = response.status === 503 ? " (the endpoint is busy or restarting: try again shortly)" : "";
    throw new Error(`HTTP ${response.status}: ${reason}${hint}`);
  }
  return answer;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

async function guarded(action) {
  clearError();
  try {
    await action();
  } catch (failure) {
    showError(failure.message);
  }
}

// the text with each entity of every tagging task in a <mark>, as displaCy shows them
function highlighted(text, entitiesByTask) {
  const spans = [];
  for (const [task, entities] of Object.entries(entitiesByTask)) {
    for (const entity of entities) spans.push({ ...entity, task });
  }
  spans.sort((a, b) => a.start - b.start || b.end - a.end);
  const box = element("div", "text");
  let position = 0;
  for (const span of spans) {
    if (span.start < position) continue; // overlapping spans of a second tagging task: keep the first
    box.append(document.createTextNode(text.slice(position, span.start)));
    const mark = element("mark", "entity", text.slice(span.start, span.end));
    mark.dataset.label = span.label;
    mark.dataset.task = span.task;
    mark.title = `${span.task}: ${span.label} (${span.score.toFixed(2)})`;
    mark.append(element("span", "entity-label", span.label));
    box.append(mark);
    position = span.end;
  }
  box.append(document.createTextNode(text.slice(position)));
  return box;
}

function probabilityBars(task, label) {
  const box = element("div", "task label");
  box.dataset.task = task;
  box.dataset.label = label.label;
  box.append(element("span", "task-name", task), element("span", "predicted", label.label));
  const ranked = Object.entries(label.probabilities).sort((a, b) => b[1] - a[1]);
  for (const [name, probability] of ranked) {
    const row = element("div", name === label.label ? "probability best" : "probability");
    row.dataset.label = name;
    const track = element("div", "track");
    const bar = element("div", "bar");
    bar.style.width = `${(probability * 100).toFixed(1)}%`;
    track.append(bar);
    row.append(element("span", "name", name), track, element("span", "value", probability.toFixed(3)));
    box.append(row);
  }
  return box;
}

function sentenceCard(text, result, index) {
  const card = element("div", "sentence");
  card.dataset.index = String(index);
  card.append(highlighted(text, result.entities));
  for (const [task, label] of Object.entries(result.labels)) card.append(probabilityBars(task, label));
  if (result.truncated) card.append(element("p", "muted", "This text was longer than the model reads and was cut."));
  const inspect = element("button", "inspect", "Inspect tokens and attention");
  inspect.type = "button";
  inspect.addEventListener("click", () => guarded(() => showInspection(text)));
  card.append(inspect);
  return card;
}

async function analyze() {
  const texts = $("texts").value.split("\n").map((line) => line.trim()).filter((line) => line);
  if (!texts.length) throw new Error("type a sentence first");
  const answer = await call("v1/predict", { texts });
  const results = $("results");
  results.replaceChildren(...answer.results.map((result, index) => sentenceCard(texts[index], result, index)));
  results.dataset.model = answer.model;
  await showInspection(texts[0]);
}

function fillSelect(select, count, chosen) {
  if (select.options.length !== count) {
    select.replaceChildren(...Array.from({ length: count }, (_, index) => new Option(String(index), String(index))));
  }
  select.value = String(chosen);
}

function tokenTable(inspection) {
  const tagging = Object.keys(inspection.tags);
  const header = element("tr");
  header.append(element("th", "", "#"), element("th", "", "token"));
  for (const task of tagging) header.append(element("th", "", task), element("th", "", "p"));
  const rows = inspection.tokens.map((token, index) => {
    const row = element("tr");
    row.append(element("td", "", String(index)), element("td", "token", token));
    for (const task of tagging) {
      const tag = inspection.tags[task][index];
      row.append(element("td", "tag", tag.tag), element("td", "", tag.score.toFixed(3)));
    }
    return row;
  });
  $("tokens").replaceChildren(header, ...rows);
}

function heatMap(inspection) {
  const head = element("thead");
  const top = element("tr");
  top.append(element("th"));
  for (const token of inspection.tokens) top.append(element("th", "", token));
  head.append(top);
  const body = element("tbody");
  inspection.attention.forEach((weights, row) => {
    const line = element("tr");
    line.append(element("th", "", inspection.tokens[row]));
    for (const [column, weight] of weights.entries()) {
      const cell = element("td");
      cell.style.background = `rgba(76, 126, 243, ${weight.toFixed(3)})`;
      cell.title = `${inspection.tokens[row]} → ${inspection.tokens[column]}: ${weight.toFixed(3)}`;
      line.append(cell);
    }
    body.append(line);
  });
  $("attention").replaceChildren(head, body);
}

async function showInspection(text) {
  state.inspected = text;
  $("inspected-text").textContent = text;
  const layer = $("layer").value === "" ? -1 : Number($("layer").value);
  const head = $("head").value === "" ? 0 : Number($("head").value);
  const inspection = await call("v1/inspect", { text, layer, head });
  fillSelect($("layer"), inspection.layers, inspection.layer);
  fillSelect($("head"), inspection.heads, inspection.head);
  tokenTable(inspection);
  heatMap(inspection);
}

async function compare() {
  const answer = await call("v1/embed", { texts: [$("first").value, $("second").value] });
  const [a, b] = answer.embeddings;
  let dot = 0, normA = 0, normB = 0;
  for (let index = 0; index < a.length; index++) {
    dot += a[index] * b[index];
    normA += a[index] * a[index];
    normB += b[index] * b[index];
  }
  $("similarity").textContent = (dot / Math.sqrt(normA * normB)).toFixed(4);
}

async function describeModel() {
  state.model = await call("v1/model");
  const tasks = state.model.tasks.map((task) => `${task.name} (${task.kind})`).join(", ");
  $("model-info").textContent = `${state.model.encoder} · version ${state.model.version} · tasks: ${tasks}`;
}

function start() {
  for (const example of EXAMPLES) {
    const button = element("button", "example", example.length > 32 ? `${example.slice(0, 30)}…` : example);
    button.type = "button";
    button.title = example;
    button.addEventListener("click", () => { $("texts").value = example; guarded(analyze); });
    $("examples").append(button);
  }
  $("texts").value = EXAMPLES.join("\n");
  $("analyze").addEventListener("click", () => guarded(analyze));
  $("compare").addEventListener("click", () => guarded(compare));
  for (const select of [$("layer"), $("head")]) {
    select.addEventListener("change", () => state.inspected && guarded(() => showInspection(state.inspected)));
  }
  guarded(describeModel);
}

start();
