// The admin page: service stats, model versions (offline metrics, activate, retrain) and
// A/B experiments with their reports.
import {
  ApiError,
  api,
  clearError,
  el,
  features,
  fill,
  fmtNumber,
  fmtTime,
  guarded,
  say,
  seg,
  setupKeyForm,
  showError,
  withDisabled,
} from "./common.js";

const $ = (id) => document.getElementById(id);

/** What training (or registering a folder trained elsewhere) reports about itself;
 * everything else in `metrics` is an offline metric. */
const TRAINING_INFO = new Set([
  "fit_seconds", "users", "items", "interactions", "last_seq", "skipped", "capped_pairs",
  "stored_users", "stored_items", "forget_mark", "registered_seq",
]);
const METRIC_ORDER = [
  "ndcg@10", "model_alone_ndcg@10", "popularity_ndcg@10", "precision@10", "recall@10", "map@10",
  "coverage",
];

const METRIC_LABELS = {
  "ndcg@10": "ndcg@10 of the served lists",
  "model_alone_ndcg@10": "ndcg@10 of the model alone",
  "popularity_ndcg@10": "ndcg@10 of popularity",
};

const state = { models: [] };

function valueText(value) {
  if (value === null || value === undefined) return "—";
  if (typeof value === "number") return fmtNumber(value, 4);
  if (typeof value === "boolean") return value ? "yes" : "no";
  if (typeof value === "string") return value;
  return JSON.stringify(value);
}

// -- stats -----------------------------------------------------------------------------------
const STAT_LABELS = {
  users: "Users",
  items: "Items",
  events: "Events",
  model_version: "Active model version",
  training: "Training now",
  experiment: "Running experiment",
  exploration: "Exploration",
  list_cache: "Kept lists",
  state_cache: "Kept user histories",
};

/** The parts of a counter group, in words: {hits, misses} of the caches. */
const PART_LABELS = {
  list_cache: { hits: "served again", misses: "built" },
  state_cache: { hits: "from memory", misses: "read from the database" },
};

/** A group of counters ({"hits": 12, "misses": 3}) as labelled numbers, with the hit rate
 * where there are hits and misses. */
function counterGroup(key, group) {
  const labels = PART_LABELS[key] || {};
  const parts = Object.entries(group).map(([name, value]) =>
    el(
      "span",
      { class: "part", testid: `stat-${key}-${name}` },
      el("span", { class: "part-value" }, valueText(value)),
      " ",
      el("span", { class: "part-label" }, labels[name] || name),
    ),
  );
  const { hits, misses } = group;
  const total = typeof hits === "number" && typeof misses === "number" ? hits + misses : 0;
  const rate = total
    ? el(
        "span",
        { class: "part rate", testid: `stat-${key}-rate` },
        `${fmtNumber((100 * hits) / total, 1)}% hit rate`,
      )
    : null;
  return [parts.flatMap((part, n) => (n ? [" · ", part] : [part])), rate ? [" · ", rate] : []];
}

function isCounterGroup(value) {
  return (
    value !== null &&
    typeof value === "object" &&
    !Array.isArray(value) &&
    Object.values(value).every((v) => typeof v === "number")
  );
}

async function loadStats() {
  const stats = await api("GET", "admin/stats");
  const keys = [
    ...Object.keys(STAT_LABELS).filter((k) => k in stats),
    ...Object.keys(stats).filter((k) => !(k in STAT_LABELS)),
  ];
  fill(
    "stats-list",
    keys.map((k) => {
      const group = isCounterGroup(stats[k]);
      return el(
        "div",
        { class: group ? "stat group" : "stat", testid: `stat-${k}` },
        el("dt", {}, STAT_LABELS[k] || k),
        el("dd", {}, group ? counterGroup(k, stats[k]) : valueText(stats[k])),
      );
    }),
  );
}

// -- model versions --------------------------------------------------------------------------
async function loadModels() {
  const models = await api("GET", "admin/models");
  state.models = Array.isArray(models) ? models : [];
  renderModels();
  refreshVariantVersionChoices();
}

/** A version's offline metrics as {name: number}: the numbers in `metrics` that are not
 * training info, and those one level down (e.g. {"holdout": {"ndcg@10": ...}}). */
function offlineMetrics(metrics) {
  const out = {};
  for (const [k, v] of Object.entries(metrics || {})) {
    if (TRAINING_INFO.has(k)) continue;
    if (typeof v === "number" || v === null) {
      out[k] = v;
    } else if (v && typeof v === "object" && !Array.isArray(v)) {
      for (const [k2, v2] of Object.entries(v)) {
        if (typeof v2 === "number" && !(k2 in out)) out[k2] = v2;
      }
    }
  }
  return out;
}

/** The descriptive (text) entries of `metrics`, e.g. how the holdout was drawn. */
function metricNotes(metrics) {
  return Object.entries(metrics || {}).filter(([, v]) => typeof v === "string");
}

function metricKeys(models) {
  const seen = new Set();
  for (const m of models) {
    for (const k of Object.keys(offlineMetrics(m.metrics))) seen.add(k);
  }
  const known = METRIC_ORDER.filter((k) => seen.has(k));
  const rest = [...seen].filter((k) => !METRIC_ORDER.includes(k)).sort();
  return [...known, ...rest];
}

function renderModels() {
  const models = [...state.models].reverse(); // newest first
  const metrics = metricKeys(models);
  $("models-empty").hidden = models.length > 0;
  $("models-table").hidden = models.length === 0;
  fill(
    "models-head",
    ["Version", "Model", "Trained", "Events", "Fit time"].map((h) => el("th", { scope: "col" }, h)),
    metrics.map((k) =>
      el("th", { scope: "col", "data-metric": k, title: "offline, on the holdout" }, METRIC_LABELS[k] || k),
    ),
    el("th", { scope: "col" }, "Status"),
  );
  fill(
    "models-body",
    models.map((m) => {
      const info = m.metrics || {};
      let status;
      if (m.active) {
        status = el("span", { class: "badge active", testid: "model-active" }, "active");
      } else if (m.forgotten_at != null) {
        status = el(
          "span",
          { class: "muted small", testid: "model-retired", title: "learned from a deleted user" },
          "retired",
        );
      } else {
        status = el(
          "button",
          { type: "button", testid: "model-activate", "aria-label": `Activate version ${m.id}` },
          "Activate",
        );
        status.addEventListener("click", () => withDisabled(status, () => activate(m.id)));
      }
      const offline = offlineMetrics(info);
      const details = [
        ...Object.entries(m.params || {}).map(([k, v]) => `${k} = ${valueText(v)}`),
        ...metricNotes(info).map(([k, v]) => `${k}: ${v}`),
        ...Object.entries(info.skipped || {}).map(([why, n]) => `skipped ${valueText(n)}: ${why}`),
        info.capped_pairs ? `weights capped: ${valueText(info.capped_pairs)} pairs` : null,
        m.path ? `path: ${m.path}` : null,
      ].filter(Boolean);
      return el(
        "tr",
        { testid: "model-row", "data-version": m.id, class: m.active ? "active" : null },
        el("th", { scope: "row" }, String(m.id)),
        el(
          "td",
          {},
          el("span", { class: "model-name" }, valueText(m.model)),
          details.length
            ? el(
                "details",
                { class: "muted small params" },
                el("summary", {}, "details"),
                el("ul", {}, details.map((d) => el("li", {}, d))),
              )
            : null,
        ),
        el("td", {}, fmtTime(m.created_at)),
        el("td", { class: "num" }, valueText(m.n_events ?? info.interactions)),
        el(
          "td",
          { class: "num" },
          typeof info.fit_seconds === "number" ? `${fmtNumber(info.fit_seconds, 2)} s` : "—",
        ),
        metrics.map((k) => el("td", { class: "num", "data-metric": k }, valueText(offline[k]))),
        el("td", {}, status),
      );
    }),
  );
}

async function activate(id) {
  clearError();
  const ok = await guarded(`activate version ${id}`, () =>
    api("POST", `admin/models/${seg(id)}/activate`),
  );
  if (ok === undefined) return;
  say(`version ${id} is now active`);
  await Promise.all([guarded("models", loadModels), guarded("stats", loadStats)]);
}

async function retrain() {
  clearError();
  const button = $("retrain");
  const label = button.textContent;
  button.textContent = "Training…";
  try {
    const answer = await withDisabled(button, () =>
      guarded("retrain", () => api("POST", "admin/retrain", { query: { wait: true } })),
    );
    if (answer === undefined) return;
    const version = answer && answer.version;
    say(version && version.id != null ? `trained version ${version.id}` : "retrained");
  } finally {
    button.textContent = label;
  }
  await Promise.all([guarded("models", loadModels), guarded("stats", loadStats)]);
}

// -- exploration -----------------------------------------------------------------------------
async function loadExploration() {
  const feats = await features();
  if (feats.has("get", "/admin/exploration") !== true) return; // optional: shown when offered
  const info = await api("GET", "admin/exploration");
  const labels = {
    method: "Method",
    items: "Items explored",
    exposures: "Exposures",
    answered: "Answered",
    rate: "Answer rate",
  };
  $("exploration").hidden = false;
  fill(
    "exploration-list",
    Object.entries(info || {}).map(([k, v]) =>
      el(
        "div",
        { class: "stat", testid: `exploration-${k}` },
        el("dt", {}, labels[k] || k),
        el("dd", {}, k === "rate" ? percent(v) : valueText(v)),
      ),
    ),
  );
}

// -- experiments -----------------------------------------------------------------------------
function experimentsUnavailable() {
  $("experiments-unavailable").hidden = false;
  $("experiments-area").hidden = true;
}

async function loadExperiments() {
  const feats = await features();
  const available = feats.has("get", "/admin/experiments");
  if (available === false) {
    experimentsUnavailable();
    return;
  }
  let experiments;
  try {
    experiments = await api("GET", "admin/experiments");
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) {
      experimentsUnavailable();
      return;
    }
    throw err;
  }
  $("experiments-unavailable").hidden = true;
  $("experiments-area").hidden = false;
  const list = Array.isArray(experiments) ? experiments : [];
  $("experiments-empty").hidden = list.length > 0;
  const cards = list.map(renderExperiment);
  fill("experiment-list", cards.map((c) => c.node));
  await Promise.all(cards.map((c) => c.loadReport()));
}

function renderExperiment(exp) {
  const name = String(exp.name);
  const variants = Array.isArray(exp.variants) ? exp.variants : [];
  const running = exp.status === "running";
  const report = el("div", { class: "report", testid: "experiment-report" });
  let stop = null;
  if (running) {
    stop = el(
      "button",
      { type: "button", class: "secondary", testid: "experiment-stop", "aria-label": `Stop ${name}` },
      "Stop",
    );
    stop.addEventListener("click", () => withDisabled(stop, () => stopExperiment(name)));
  }
  const node = el(
    "article",
    { class: "experiment", testid: "experiment", "data-name": name },
    el(
      "h3",
      {},
      name,
      " ",
      el(
        "span",
        { class: running ? "badge active" : "badge off", testid: "experiment-status" },
        valueText(exp.status),
      ),
      " ",
      stop,
    ),
    el("p", { class: "muted small" }, `created ${fmtTime(exp.created_at)}`),
    el(
      "table",
      { class: "table compact" },
      el("caption", { class: "sr-only" }, `Variants of ${name}`),
      el(
        "thead",
        {},
        el("tr", {}, ["Variant", "Share", "Model version"].map((h) => el("th", { scope: "col" }, h))),
      ),
      el(
        "tbody",
        {},
        variants.map((v) =>
          el(
            "tr",
            { testid: "experiment-variant" },
            el("th", { scope: "row" }, valueText(v.name)),
            el("td", { class: "num" }, valueText(v.share)),
            el("td", { class: "num" }, v.model_version == null ? "active" : valueText(v.model_version)),
          ),
        ),
      ),
    ),
    report,
  );
  return { node, loadReport: () => loadReport(name, report) };
}

function percent(value, signed = false) {
  if (typeof value !== "number" || !Number.isFinite(value)) return valueText(value);
  const text = `${fmtNumber(value * 100, 2)} %`;
  return signed && value > 0 ? `+${text}` : text;
}

async function loadReport(name, box) {
  const outcome = $("outcome").value;
  let rep;
  try {
    rep = await api("GET", `admin/experiments/${seg(name)}/report`, { query: { outcome } });
  } catch (err) {
    if (!(err instanceof ApiError)) throw err;
    fill(
      box,
      el(
        "p",
        { class: "muted", testid: "report-unavailable" },
        err.status === 404 ? `report not available: ${err.message}` : `report failed: ${err.message}`,
      ),
    );
    return;
  }
  const rows = Array.isArray(rep.variants) ? rep.variants : [];
  const test = rep.test || null;
  const significant = test && test.significant === true;
  const hasLift = rows.some((r) => "lift" in r);
  fill(
    box,
    el(
      "h4",
      {},
      `Report: outcome “${valueText(rep.outcome ?? outcome)}”`,
      rep.control ? ` (control: ${valueText(rep.control)})` : "",
    ),
    el(
      "table",
      { class: "table compact", testid: "report-table" },
      el("caption", { class: "sr-only" }, `Outcome rate per variant of ${name}`),
      el(
        "thead",
        {},
        el(
          "tr",
          {},
          ["Variant", "Users", "Requests", "Exposures", "Users with outcome", "Rate"]
            .concat(hasLift ? ["Lift"] : [])
            .map((h) => el("th", { scope: "col" }, h)),
        ),
      ),
      el(
        "tbody",
        {},
        rows.map((r) =>
          el(
            "tr",
            { testid: "report-row", "data-variant": r.variant },
            el("th", { scope: "row" }, valueText(r.variant)),
            el("td", { class: "num" }, valueText(r.users)),
            el("td", { class: "num" }, valueText(r.requests)),
            el("td", { class: "num" }, valueText(r.exposures)),
            el("td", { class: "num" }, valueText(r.outcome_users)),
            el(
              "td",
              { class: "num", testid: "report-rate" },
              percent(r.rate),
            ),
            hasLift ? el("td", { class: "num", testid: "report-lift" }, percent(r.lift, true)) : null,
          ),
        ),
      ),
    ),
    test
      ? el(
          "p",
          { class: "test", testid: "report-test" },
          `${valueText(test.method)}: statistic ${valueText(test.statistic)}, `,
          el("span", { testid: "report-p-value" }, `p = ${valueText(test.p_value)}`),
          `, α = ${valueText(test.alpha)} — `,
          el(
            "strong",
            {
              class: significant ? "badge active" : "badge off",
              testid: "report-significant",
              "data-significant": significant ? "true" : "false",
            },
            significant ? "significant" : "not significant",
          ),
        )
      : el("p", { class: "muted" }, "No test result yet."),
  );
}

async function stopExperiment(name) {
  clearError();
  const ok = await guarded(`stop ${name}`, () =>
    api("POST", `admin/experiments/${seg(name)}/stop`),
  );
  if (ok === undefined) return;
  say(`stopped ${name}`);
  await guarded("experiments", loadExperiments);
}

// the new-experiment form
function versionSelect(selected) {
  const select = el("select", { class: "variant-version", "aria-label": "Model version" });
  fillVersionChoices(select, selected);
  return select;
}

function fillVersionChoices(select, selected) {
  const options = [el("option", { value: "" }, "active version")];
  for (const m of [...state.models].reverse()) {
    options.push(el("option", { value: String(m.id) }, `version ${m.id} (${valueText(m.model)})`));
  }
  fill(select, options);
  select.value = selected == null ? "" : String(selected);
  if (select.value !== (selected == null ? "" : String(selected))) select.value = "";
}

function refreshVariantVersionChoices() {
  for (const select of document.querySelectorAll(".variant-version")) {
    fillVersionChoices(select, select.value || null);
  }
}

let variantCounter = 0;

function addVariantRow(name = "", share = "", version = null) {
  variantCounter += 1;
  const n = variantCounter;
  const nameInput = el("input", {
    id: `variant-name-${n}`,
    class: "variant-name",
    required: true,
    maxlength: 100,
    autocomplete: "off",
    value: name,
  });
  const shareInput = el("input", {
    id: `variant-share-${n}`,
    class: "variant-share",
    type: "number",
    min: 0,
    max: 1,
    step: 0.01,
    required: true,
    value: share,
  });
  const select = versionSelect(version);
  select.id = `variant-version-${n}`;
  const remove = el("button", { type: "button", class: "link", "aria-label": "Remove variant" }, "Remove");
  const row = el(
    "div",
    { class: "row variant-row", testid: "variant-row" },
    el("label", { for: nameInput.id }, "Name"),
    nameInput,
    el("label", { for: shareInput.id }, "Share"),
    shareInput,
    el("label", { for: select.id }, "Model"),
    select,
    remove,
  );
  remove.addEventListener("click", () => row.remove());
  $("variant-rows").append(row);
}

async function createExperiment() {
  clearError();
  const name = $("experiment-name").value.trim();
  const variants = [...document.querySelectorAll(".variant-row")].map((row) => {
    const version = row.querySelector(".variant-version").value;
    return {
      name: row.querySelector(".variant-name").value.trim(),
      share: Number(row.querySelector(".variant-share").value),
      model_version: version === "" ? null : Number(version),
    };
  });
  if (variants.length < 2) {
    showError("an experiment needs at least two variants");
    return;
  }
  const ok = await guarded("new experiment", () =>
    api("POST", "admin/experiments", { body: { name, variants } }),
  );
  if (ok === undefined) return;
  say(`started experiment ${name}`);
  $("experiment-name").value = "";
  await guarded("experiments", loadExperiments);
}

// -- start -----------------------------------------------------------------------------------
function loadAll() {
  return Promise.all([
    guarded("stats", loadStats),
    guarded("models", loadModels),
    guarded("experiments", loadExperiments),
    guarded("exploration", loadExploration),
  ]);
}

function start() {
  setupKeyForm(loadAll);
  $("reload").addEventListener("click", () => {
    clearError();
    loadAll();
  });
  $("retrain").addEventListener("click", retrain);
  $("outcome").addEventListener("change", () => guarded("experiments", loadExperiments));
  $("add-variant").addEventListener("click", () => addVariantRow());
  $("experiment-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const button = event.submitter || $("experiment-form").querySelector("button[type=submit]");
    withDisabled(button, createExperiment);
  });
  addVariantRow("control", "0.5");
  addVariantRow("treatment", "0.5");
  loadAll();
}

start();
