// The user page: pick or create a user, their recommendations (like / dislike / more like
// this), item search, onboarding for a newcomer, and their recent events.
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

const USER_STORE = "tastebud.user";
const K = 10;

const state = {
  user: null,
  generation: 0, // bumped on every user switch: late answers for another user are dropped
  previousIds: null, // the items of the list shown before, to mark the newcomers
  titles: new Map(), // item id -> title, from every list and search seen
  picks: new Map(), // onboarding picks: item id -> title
  eventCount: 0,
};

const $ = (id) => document.getElementById(id);

function rememberTitle(id, title) {
  if (title) state.titles.set(String(id), String(title));
}

function titleOf(id) {
  return state.titles.get(String(id)) || String(id);
}

// -- users: a type-ahead picker over GET /users?q=<prefix> ----------------------------------
// The server searches (an index range of the ids), so the page never holds the user list:
// it stays as quick with a million users as with ten.
const PICKER_LIMIT = 20;
const picker = {
  ids: [], // the options shown, in order
  active: -1, // the option under the keyboard, -1: none
  generation: 0, // bumped on every search: late answers for older text are dropped
  timer: null,
};

function scheduleUserSearch() {
  clearTimeout(picker.timer);
  picker.timer = setTimeout(() => guarded("users", searchUsers), 150);
}

async function searchUsers() {
  const input = $("user-search");
  const query = input.value.trim();
  const generation = ++picker.generation;
  const users = await api("GET", "users", { query: { q: query, limit: PICKER_LIMIT } });
  if (generation !== picker.generation) return;
  renderUserOptions(
    (Array.isArray(users) ? users : []).map((u) => String(u.id)),
    query,
  );
}

function renderUserOptions(ids, query) {
  picker.ids = ids;
  picker.active = -1;
  fill(
    "user-options",
    ids.map((id, n) =>
      el(
        "li",
        {
          id: `user-option-${n}`,
          role: "option",
          "aria-selected": "false",
          testid: "user-option",
          "data-user": id,
          // keep the focus in the box: the click below picks, blur would close first
          onmousedown: (event) => event.preventDefault(),
          onclick: () => chooseUser(id),
        },
        id,
      ),
    ),
  );
  let note;
  if (ids.length === 0) note = query ? `No user id starts with “${query}”.` : "No users yet.";
  else if (ids.length === PICKER_LIMIT) note = `The first ${PICKER_LIMIT} matches; type more to narrow them.`;
  else note = `${ids.length} match${ids.length === 1 ? "" : "es"}.`;
  $("user-note").textContent = note;
  setOptionsOpen(ids.length > 0 && document.activeElement === $("user-search"));
}

function setOptionsOpen(open) {
  $("user-options").hidden = !open;
  $("user-search").setAttribute("aria-expanded", String(open));
  if (!open) setActiveOption(-1);
}

function setActiveOption(n) {
  picker.active = n;
  const input = $("user-search");
  $("user-options")
    .querySelectorAll("[role=option]")
    .forEach((option, k) => {
      option.setAttribute("aria-selected", String(k === n));
      option.classList.toggle("active", k === n);
      if (k === n) option.scrollIntoView({ block: "nearest" });
    });
  if (n >= 0) input.setAttribute("aria-activedescendant", `user-option-${n}`);
  else input.removeAttribute("aria-activedescendant");
}

function onPickerKey(event) {
  const open = !$("user-options").hidden;
  const count = picker.ids.length;
  if (event.key === "ArrowDown" || event.key === "ArrowUp") {
    event.preventDefault();
    if (!count) return;
    if (!open) setOptionsOpen(true);
    const step = event.key === "ArrowDown" ? 1 : -1;
    const from = picker.active < 0 && step < 0 ? count : picker.active;
    setActiveOption((from + step + count) % count);
  } else if (event.key === "Enter" && open && picker.active >= 0) {
    event.preventDefault();
    chooseUser(picker.ids[picker.active]);
  } else if (event.key === "Escape" && open) {
    event.preventDefault();
    setOptionsOpen(false);
  }
}

/** Forget searches still to come or on their way (a user was chosen meanwhile). */
function cancelUserSearch() {
  clearTimeout(picker.timer);
  picker.generation += 1;
}

function chooseUser(id) {
  cancelUserSearch();
  $("user-search").value = id;
  setOptionsOpen(false);
  selectUser(id);
}

/** "Open" (or Enter) with a typed id: that user, if there is one. */
async function openTypedUser() {
  const id = $("user-search").value.trim();
  if (!id) return;
  cancelUserSearch();
  setOptionsOpen(false);
  if (!picker.ids.includes(id)) {
    // an id is the first of the ids it starts, so one row says whether it exists (and a
    // search, unlike GET users/{id}, answers 200 either way: no error in the console)
    const first = await api("GET", "users", { query: { q: id, limit: 1 } });
    if (!Array.isArray(first) || !first.length || String(first[0].id) !== id) {
      showError(`no user “${id}”; create it below`);
      return;
    }
  }
  await selectUser(id);
}

async function createUser(id) {
  await api("PUT", `users/${seg(id)}`);
  say(`created user ${id}`);
  await selectUser(id);
}

async function selectUser(id) {
  state.user = id || null;
  state.generation += 1;
  state.previousIds = null;
  state.picks.clear();
  renderPicks();
  try {
    if (id) localStorage.setItem(USER_STORE, id);
    else localStorage.removeItem(USER_STORE);
  } catch {
    // no storage: the choice lasts for this page only
  }
  $("current-user").textContent = id || "none";
  $("user-search").value = id || "";
  $("user-note").textContent = "";
  $("refresh-recs").disabled = !id;
  fill("similar");
  $("similar").hidden = true;
  clearError();
  if (!id) {
    fill("rec-list");
    $("recs-meta").textContent = "";
    $("recs-empty").hidden = false;
    $("onboarding").hidden = true;
    renderEvents([]);
    return;
  }
  await refreshUser();
}

async function refreshUser() {
  await Promise.all([
    guarded("recommendations", loadRecommendations),
    guarded("events", loadEvents),
  ]);
  updateOnboarding();
}

// -- recommendations -------------------------------------------------------------------------
async function loadRecommendations() {
  if (!state.user) return;
  const generation = state.generation;
  const answer = await api("GET", `users/${seg(state.user)}/recommendations`, {
    query: { k: K, explain: true },
  });
  if (generation !== state.generation) return;
  renderRecommendations(answer);
}

function renderRecommendations(answer) {
  const items = Array.isArray(answer.items) ? answer.items : [];
  for (const rec of items) rememberTitle(rec.item, rec.title);
  const before = state.previousIds;
  const meta = [];
  meta.push(`model version ${answer.model_version ?? "none (popularity)"}`);
  if (answer.experiment) {
    meta.push(`experiment ${answer.experiment}` + (answer.variant ? `, variant ${answer.variant}` : ""));
  }
  if (answer.request_id) meta.push(`request ${answer.request_id}`);
  $("recs-meta").textContent = meta.join(" · ");
  $("recs-empty").textContent = items.length ? "" : "Nothing to recommend right now.";
  $("recs-empty").hidden = items.length > 0;
  fill(
    "rec-list",
    items.map((rec) => renderRecommendation(rec, answer.request_id, before)),
  );
  state.previousIds = items.map((rec) => String(rec.item));
}

function renderRecommendation(rec, requestId, before) {
  const id = String(rec.item);
  const title = rec.title ? String(rec.title) : id;
  const fresh = before !== null && !before.includes(id);
  const sources = Array.isArray(rec.sources) && rec.sources.length ? rec.sources : [rec.source];
  const like = el("button", { type: "button", testid: "rec-like", "aria-label": `Like ${title}` }, "Like");
  const dislike = el(
    "button",
    { type: "button", testid: "rec-dislike", class: "secondary", "aria-label": `Dislike ${title}` },
    "Dislike",
  );
  const similar = el(
    "button",
    { type: "button", testid: "rec-similar", class: "link", "aria-label": `More like ${title}` },
    "More like this",
  );
  const buttons = [like, dislike, similar];
  like.addEventListener("click", () =>
    withDisabled(buttons, () => rate(id, "like", requestId)),
  );
  dislike.addEventListener("click", () =>
    withDisabled(buttons, () => rate(id, "dislike", requestId)),
  );
  similar.addEventListener("click", () => withDisabled(similar, () => showSimilar(id, title)));
  return el(
    "li",
    { class: fresh ? "rec fresh" : "rec", testid: "rec", "data-item": id, "data-rank": rec.rank },
    el(
      "div",
      { class: "rec-main" },
      el(
        "div",
        { class: "rec-line" },
        el("span", { class: "rec-title", testid: "rec-title" }, title),
        sources.map((s) => el("span", { class: "badge", testid: "rec-source" }, String(s))),
        rec.exploration ? el("span", { class: "badge explore", testid: "rec-exploration" }, "exploring") : null,
        fresh ? el("span", { class: "badge new", testid: "rec-new" }, "new") : null,
      ),
      rec.explanation
        ? el("p", { class: "rec-explanation", testid: "rec-explanation" }, String(rec.explanation))
        : null,
      el("p", { class: "muted small" }, `${title !== id ? `${id} · ` : ""}score ${fmtNumber(rec.score)}`),
    ),
    el("div", { class: "rec-actions" }, buttons),
  );
}

async function rate(itemId, type, requestId) {
  if (!state.user) {
    showError("pick or create a user first");
    return;
  }
  clearError();
  const body = { user_id: state.user, item_id: itemId, type };
  const feats = await features();
  if (requestId && feats.bodyField("post", "/events", "request_id")) body.request_id = requestId;
  const ok = await guarded(type, () => api("POST", "events", { body }));
  if (ok === undefined) return;
  say(`${type === "like" ? "liked" : type === "dislike" ? "disliked" : type} ${titleOf(itemId)}`);
  await refreshUser();
}

async function showSimilar(itemId, title) {
  const box = $("similar");
  const answer = await guarded("similar items", () =>
    api("GET", `items/${seg(itemId)}/similar`, { query: { k: 5 } }),
  );
  if (answer === undefined) return;
  const items = Array.isArray(answer.items) ? answer.items : [];
  for (const rec of items) rememberTitle(rec.item, rec.title);
  const close = el("button", { type: "button", class: "link", testid: "similar-close" }, "Close");
  close.addEventListener("click", () => {
    box.hidden = true;
    fill(box);
  });
  fill(
    box,
    el("h3", {}, `More like ${title}`, " ", close),
    // what the scores are: a learned similarity, the items' metadata, or popularity
    answer.basis
      ? el(
          "p",
          { class: "muted small basis", testid: "similar-basis", "data-source": answer.source },
          String(answer.basis),
        )
      : null,
    items.length
      ? el(
          "ul",
          { class: "results" },
          items.map((rec) => itemRow(String(rec.item), rec.title, { testid: "similar-item" })),
        )
      : el("p", { class: "muted" }, "Nothing similar found."),
  );
  box.hidden = false;
}

// -- search and onboarding -------------------------------------------------------------------
/** A few of an item's attributes, as "Miles Davis · 1959 · jazz". */
function describe(attributes) {
  if (!attributes || typeof attributes !== "object") return "";
  return Object.values(attributes)
    .filter((v) => ["string", "number", "boolean"].includes(typeof v))
    .slice(0, 4)
    .map(String)
    .join(" · ");
}

function itemRow(id, title, { testid, available = true, details = "" } = {}) {
  const name = title ? String(title) : id;
  rememberTitle(id, title);
  const like = el(
    "button",
    { type: "button", testid: `${testid}-like`, "aria-label": `Like ${name}` },
    "Like",
  );
  like.addEventListener("click", () => withDisabled(like, () => rate(id, "like", null)));
  const pick = el(
    "button",
    {
      type: "button",
      class: "secondary pick",
      testid: `${testid}-pick`,
      "aria-label": `Pick ${name} for onboarding`,
    },
    "Pick",
  );
  pick.addEventListener("click", () => {
    state.picks.set(id, name);
    renderPicks();
  });
  return el(
    "li",
    { testid, "data-item": id },
    el(
      "span",
      { class: "item-name" },
      el("span", { class: "item-title", testid: `${testid}-title` }, name),
      " ",
      title ? el("span", { class: "muted small" }, id) : null,
      details ? el("span", { class: "muted small details" }, details) : null,
      available ? null : el("span", { class: "badge off" }, "unavailable"),
    ),
    el("span", { class: "item-actions" }, like, pick),
  );
}

async function search(query) {
  const items = await api("GET", "items", { query: { q: query, limit: 20 } });
  $("search-note").textContent = items.length
    ? `${items.length} item${items.length === 1 ? "" : "s"}${items.length === 20 ? " (first 20)" : ""}`
    : "No items match.";
  fill(
    "search-results",
    items.map((item) =>
      itemRow(String(item.id), item.title, {
        testid: "search-result",
        available: item.available !== false,
        details: describe(item.attributes),
      }),
    ),
  );
}

function renderPicks() {
  const list = $("onboarding-picks");
  fill(
    list,
    [...state.picks].map(([id, name]) => {
      const remove = el(
        "button",
        { type: "button", class: "link", "aria-label": `Remove ${name}` },
        "×",
      );
      remove.addEventListener("click", () => {
        state.picks.delete(id);
        renderPicks();
      });
      return el("li", { testid: "onboarding-pick", "data-item": id }, name, " ", remove);
    }),
  );
  $("onboarding-submit").disabled = state.picks.size === 0;
  updateOnboarding();
}

function updateOnboarding() {
  const show = Boolean(state.user) && (state.eventCount === 0 || state.picks.size > 0);
  $("onboarding").hidden = !show;
  document.body.classList.toggle("onboarding", show);
}

async function submitOnboarding() {
  if (!state.user) {
    showError("pick or create a user first");
    return;
  }
  const feats = await features();
  const available = feats.has("post", "/users/{user_id}/onboarding");
  if (available === false) {
    $("onboarding-unavailable").hidden = false;
    return;
  }
  const body = { liked_items: [...state.picks.keys()] };
  if (feats.bodyField("post", "/users/{user_id}/onboarding", "k")) body.k = K;
  const raw = $("onboarding-attributes").value.trim();
  if (raw) {
    let attributes;
    try {
      attributes = JSON.parse(raw);
    } catch {
      showError("attributes: not valid JSON");
      return;
    }
    if (attributes === null || typeof attributes !== "object" || Array.isArray(attributes)) {
      showError('attributes: must be a JSON object like {"country": "NL"}');
      return;
    }
    body.attributes = attributes;
  }
  clearError();
  const generation = state.generation;
  let answer;
  try {
    answer = await api("POST", `users/${seg(state.user)}/onboarding`, { body });
  } catch (err) {
    if (err instanceof ApiError && err.status === 404 && available === null) {
      $("onboarding-unavailable").hidden = false;
    } else {
      showError(err, "onboarding");
    }
    return;
  }
  if (generation !== state.generation) return;
  say(`onboarded ${state.user} with ${body.liked_items.length} item(s)`);
  state.picks.clear();
  renderPicks();
  if (answer && Array.isArray(answer.items)) renderRecommendations(answer);
  await guarded("events", loadEvents);
  updateOnboarding();
}

// -- events ----------------------------------------------------------------------------------
async function loadEvents() {
  if (!state.user) return;
  const generation = state.generation;
  const events = await api("GET", `users/${seg(state.user)}/events`, { query: { limit: 20 } });
  if (generation !== state.generation) return;
  // titles we have not seen yet (a few small requests; failures leave the id)
  const unknown = [...new Set(events.map((e) => String(e.item_id)))].filter(
    (id) => !state.titles.has(id),
  );
  await Promise.all(
    unknown.map((id) =>
      api("GET", `items/${seg(id)}`)
        .then((item) => rememberTitle(id, item.title))
        .catch(() => undefined),
    ),
  );
  if (generation !== state.generation) return;
  renderEvents(events);
}

function renderEvents(events) {
  state.eventCount = events.length;
  $("events-empty").hidden = events.length > 0;
  $("events-table").hidden = events.length === 0;
  fill(
    "events-body",
    [...events].reverse().map((e) =>
      el(
        "tr",
        { testid: "event", "data-type": e.type, "data-item": e.item_id },
        el("td", {}, fmtTime(e.ts)),
        el("td", {}, e.value == null || e.type !== "rating" ? String(e.type) : `${e.type} ${fmtNumber(e.value)}`),
        el("td", {}, titleOf(e.item_id)),
      ),
    ),
  );
}

// -- start -----------------------------------------------------------------------------------
function start() {
  setupKeyForm(() => {
    picker.ids = [];
    if (state.user) refreshUser();
  });
  const userSearch = $("user-search");
  userSearch.addEventListener("input", scheduleUserSearch);
  userSearch.addEventListener("focus", () => {
    if (picker.ids.length) setOptionsOpen(true);
    scheduleUserSearch();
  });
  userSearch.addEventListener("blur", () => setOptionsOpen(false));
  userSearch.addEventListener("keydown", onPickerKey);
  $("pick-form").addEventListener("submit", (event) => {
    event.preventDefault();
    clearError();
    guarded("open user", openTypedUser);
  });
  $("create-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const id = $("new-user-id").value.trim();
    if (!id) return;
    const button = event.submitter || $("create-form").querySelector("button");
    withDisabled(button, () => guarded("create user", () => createUser(id))).then(() => {
      $("new-user-id").value = "";
    });
  });
  $("refresh-recs").addEventListener("click", () => {
    clearError();
    refreshUser();
  });
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    clearError();
    guarded("search", () => search($("search-input").value.trim()));
  });
  $("onboarding-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const button = $("onboarding-submit");
    withDisabled(button, submitOnboarding).then(() => {
      button.disabled = state.picks.size === 0;
    });
  });
  renderPicks();
  features().then((feats) => {
    if (feats.has("post", "/users/{user_id}/onboarding") === false) {
      $("onboarding-unavailable").hidden = false;
    }
  });

  let initial = new URLSearchParams(location.search).get("user");
  if (!initial) {
    try {
      initial = localStorage.getItem(USER_STORE);
    } catch {
      initial = null;
    }
  }
  if (initial) selectUser(initial);
}

start();
