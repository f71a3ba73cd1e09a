// The instructor's dashboard (docs/dashboard.md). Plain JavaScript, no build
// step, nothing loaded from elsewhere. The live stream is read with fetch()
// rather than EventSource, because EventSource cannot send the Authorization
// header and the token must not travel in URLs (they end up in logs).
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const TOKEN_KEY = "mastery.dashboard.token";
  const STATUS = {
    complete: "Complete",
    complete_max_work: "Complete (max work)",
    in_progress: "In progress",
    struggling: "Struggling",
    no_work: "Not started",
  };
  const SUMMARY_ORDER = ["struggling", "no_work", "in_progress", "complete", "complete_max_work"];
  const STALL_MS = 45000; // three missed heartbeats: the connection is dead

  const state = {
    token: sessionStorage.getItem(TOKEN_KEY),
    li: null,
    view: "class",
    registration: null,
    goals: [],
    // Display names from the goals lookup: the learning instance's title,
    // goals' titles and their targets' names, learners' names. Without a
    // name the page shows a shortened id; the full id is in the tooltip.
    names: { learning_instance: null, goals: {}, registrations: {} },
    rows: new Map(), // registration id -> {items: Map(goal -> item), tr, cells: Map(goal -> td)}
    order: [], // registration ids in the API's order
    sort: { key: "learner", dir: 1, defaulted: true },
    filter: "all",
    lastId: null,
    tokenExpired: false,
    controller: null,
    retries: 0,
    retryTimer: null,
    selected: null,
    // reg + "\n" + goal -> {points} | {error}, with busy/again while fetching
    history: new Map(),
    dirty: new Set(),
    frame: 0,
  };

  // -- messages and the live indicator -------------------------------------

  function showMessage(text) {
    const box = $("message");
    box.textContent = text;
    box.hidden = !text;
  }

  function setLive(mode, text) {
    const el = $("live");
    el.className = "live " + mode;
    el.textContent = text;
  }

  function explain(err) {
    switch (err.status) {
      case 401:
        return `Your token was refused: ${err.message}. Sign in with a valid token.`;
      case 403:
        return `You may not see this: ${err.message}`;
      case 404:
        return `Not found: ${err.message}`;
      case 429:
        return `Too many open live views: ${err.message}. Retrying shortly.`;
      case 400:
        return `Bad request: ${err.message}`;
      default:
        return `The server could not answer (${err.status || "network"}): ${err.message}`;
    }
  }

  // -- HTTP -------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, message, retryAfter) {
      super(message);
      this.status = status;
      this.retryAfter = retryAfter;
    }
  }

  async function api(path, options = {}) {
    const headers = Object.assign({}, options.headers, {
      Authorization: "Bearer " + state.token,
    });
    let response;
    try {
      response = await fetch("../" + path, Object.assign({}, options, { headers }));
    } catch (err) {
      if (err.name === "AbortError") throw err;
      throw new ApiError(0, "the server is unreachable");
    }
    if (!response.ok) {
      let message = response.statusText;
      try {
        const body = await response.json();
        message = (body.error && body.error.message) || message;
      } catch (_) {
        // not JSON: keep the status text
      }
      throw new ApiError(response.status, message, Number(response.headers.get("Retry-After")));
    }
    return response;
  }

  // -- names ------------------------------------------------------------------

  // Ids are UUIDs or long tokens: shortened when nothing better is known.
  function shortId(id) {
    return id.length > 12 ? id.slice(0, 8) + "…" : id;
  }

  // An own property only: an id may be "constructor" or "__proto__".
  function own(map, key) {
    return map && Object.hasOwn(map, key) ? map[key] : undefined;
  }

  function goalName(goal) {
    const names = own(state.names.goals, goal);
    return own(names, "title") || shortId(goal);
  }

  function learnerName(reg) {
    return own(state.names.registrations, reg) || shortId(reg);
  }

  function targetName(goal, target) {
    return own(own(own(state.names.goals, goal), "targets"), target) || shortId(target);
  }

  // A name with its id in the tooltip (and in the DOM for the tests).
  function named(element, text, id) {
    element.textContent = text;
    element.title = id;
    element.dataset.id = id;
    return element;
  }

  // -- sign in, choose a learning instance and goals --------------------------

  function show(section) {
    for (const id of ["sign-in", "choose", "board"]) $(id).hidden = id !== section;
    $("sign-out").hidden = section === "sign-in";
  }

  function signOut(message) {
    stopStream();
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = null;
    setLive("off", "offline");
    show("sign-in");
    showMessage(message || "");
  }

  function readHash() {
    const params = new URLSearchParams(location.hash.slice(1));
    return { li: params.get("li"), goals: params.get("goals") };
  }

  function writeHash() {
    const params = new URLSearchParams({ li: state.li, goals: state.goals.join(",") });
    history.replaceState(null, "", "#" + params.toString());
  }

  async function loadGoals(li, preselected) {
    showMessage("");
    let info;
    try {
      info = await (await api(`learning-instances/${encodeURIComponent(li)}/goals`)).json();
    } catch (err) {
      if (err.status === 401) return signOut(explain(err));
      showMessage(explain(err));
      return;
    }
    state.li = li;
    state.view = info.view;
    state.registration = info.registration_id;
    state.names = Object.assign(
      { learning_instance: null, goals: {}, registrations: {} },
      info.names || {},
    );
    const list = $("goal-list");
    list.textContent = "";
    if (!info.goal_ids.length) {
      showMessage("This learning instance has no goals yet.");
      return;
    }
    const wanted = preselected ? new Set(preselected.split(",")) : null;
    info.goal_ids.forEach((goal, i) => {
      const label = document.createElement("label");
      const box = document.createElement("input");
      box.type = "checkbox";
      box.value = goal;
      box.checked = wanted ? wanted.has(goal) : i < 5;
      label.append(box, " ", named(document.createElement("span"), goalName(goal), goal));
      list.append(label);
    });
    $("goals-form").hidden = false;
    if (wanted) openBoard();
  }

  function openBoard() {
    const goals = [...$("goal-list").querySelectorAll("input:checked")].map((b) => b.value);
    if (!goals.length) return showMessage("Choose at least one goal.");
    if (goals.length > 50) return showMessage("Choose at most 50 goals.");
    showMessage("");
    state.goals = goals;
    state.rows = new Map();
    state.order = [];
    state.lastId = null;
    state.selected = null;
    state.history.clear();
    state.sort = { key: "learner", dir: 1, defaulted: true };
    writeHash();
    const liName = state.names.learning_instance || shortId(state.li);
    named(
      $("board-title"),
      state.view === "learner" ? `Your progress in ${liName}` : `Learning instance ${liName}`,
      state.li,
    );
    $("filter").disabled = state.view === "learner";
    $("detail").hidden = true;
    renderHead();
    renderBody();
    show("board");
    startStream();
  }

  // -- the live stream --------------------------------------------------------

  function streamPath() {
    const goals = "?goal_ids=" + encodeURIComponent(state.goals.join(","));
    if (state.view === "learner") {
      return `registrations/${encodeURIComponent(state.registration)}/metrics/status-and-progress/stream${goals}`;
    }
    return `learning-instances/${encodeURIComponent(state.li)}/metrics/status-and-progress/stream${goals}`;
  }

  function stopStream() {
    clearTimeout(state.retryTimer);
    if (state.controller) state.controller.abort();
    state.controller = null;
  }

  async function startStream() {
    stopStream();
    const controller = new AbortController();
    state.controller = controller;
    setLive("retry", state.lastId ? "reconnecting…" : "connecting…");
    const headers = { Accept: "text/event-stream" };
    if (state.lastId) headers["Last-Event-ID"] = state.lastId;
    let retryAfter = 0;
    try {
      const response = await api(streamPath(), { headers, signal: controller.signal });
      setLive("on", "live");
      state.retries = 0;
      await readEvents(response.body, controller);
      if (state.tokenExpired) {
        // The server ended the stream at the token's expiry: reconnecting
        // with it would be refused; the page asks for a fresh one.
        state.tokenExpired = false;
        return signOut("Your token expired. Sign in with a fresh token to keep the page live.");
      }
    } catch (err) {
      if (controller.signal.aborted && state.controller !== controller) return;
      if (err.status === 401) return signOut(explain(err));
      if ([400, 403, 404].includes(err.status)) {
        setLive("off", "offline");
        showMessage(explain(err));
        return;
      }
      if (err.status === 429) {
        showMessage(explain(err));
        retryAfter = (err.retryAfter || 5) * 1000;
      }
    }
    if (state.controller !== controller) return; // replaced or stopped
    setLive("retry", "reconnecting…");
    const delay = retryAfter || Math.min(500 * 2 ** state.retries, 15000);
    state.retries += 1;
    state.retryTimer = setTimeout(startStream, delay);
  }

  async function readEvents(body, controller) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let stall = setTimeout(() => controller.abort(), STALL_MS);
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        clearTimeout(stall);
        stall = setTimeout(() => controller.abort(), STALL_MS);
        buffer = (buffer + decoder.decode(value, { stream: true })).replace(/\r\n?/g, "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          dispatch(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
    } finally {
      clearTimeout(stall);
    }
  }

  function dispatch(block) {
    let event = "message";
    let id = null;
    const data = [];
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue; // heartbeat
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "event") event = value;
      else if (field === "id") id = value;
      else if (field === "data") data.push(value);
    }
    if (!data.length) return;
    const payload = JSON.parse(data.join("\n"));
    if (event === "snapshot") onSnapshot(payload);
    else if (event === "row") onRow(payload);
    else if (event === "end" && payload.reason === "token_expired") state.tokenExpired = true;
    if (id !== null && (event === "snapshot" || event === "row")) state.lastId = id;
  }

  function onSnapshot(page) {
    state.rows = new Map();
    state.order = [];
    for (const row of page.data) {
      const items = new Map();
      row.status_and_progress.forEach((item, i) => items.set(page.column_headers[i], item));
      state.rows.set(row.registration_id, { items, tr: null, cells: new Map() });
      state.order.push(row.registration_id);
    }
    renderBody();
  }

  function onRow(change) {
    let row = state.rows.get(change.registration_id);
    if (!row) {
      row = { items: new Map(), tr: null, cells: new Map() };
      state.rows.set(change.registration_id, row);
      state.order.push(change.registration_id);
    }
    row.items.set(change.goal_id, change.item);
    state.dirty.add(change.registration_id + "\n" + change.goal_id);
    if (!state.frame) state.frame = requestAnimationFrame(applyChanges);
  }

  function applyChanges() {
    state.frame = 0;
    let reorder = false;
    const flashed = [];
    for (const key of state.dirty) {
      const [reg, goal] = key.split("\n");
      const row = state.rows.get(reg);
      if (!row.tr) {
        reorder = true;
        continue;
      }
      if (reg === state.selected) loadHistory(reg, goal);
      const td = row.cells.get(goal);
      fillCell(td, row.items.get(goal));
      td.classList.remove("flash");
      flashed.push(td);
      if (state.sort.key === goal || state.filter !== "all") reorder = true;
    }
    state.dirty.clear();
    if (flashed.length) {
      void $("rows").offsetWidth; // one reflow restarts every cell's animation
      for (const td of flashed) td.classList.add("flash");
    }
    if (state.selected && state.rows.has(state.selected)) renderDetail(state.selected);
    if (reorder) renderBody();
    else renderSummary();
  }

  // -- the table --------------------------------------------------------------

  function renderHead() {
    const head = $("head");
    head.textContent = "";
    const columns = [["learner", "Learner"], ...state.goals.map((g) => [g, goalName(g)])];
    for (const [key, label] of columns) {
      const th = document.createElement("th");
      th.scope = "col";
      th.dataset.key = key;
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = label;
      button.title =
        key === "learner" ? "Sort by learner" : `Goal ${key}: sort by progress in this goal`;
      button.addEventListener("click", () => sortBy(key));
      th.append(button);
      head.append(th);
    }
    updateSortMarks();
  }

  function sortBy(key) {
    const same = state.sort.key === key && !state.sort.defaulted;
    state.sort = { key, dir: same ? -state.sort.dir : 1, defaulted: false };
    updateSortMarks();
    renderBody();
  }

  function updateSortMarks() {
    for (const th of $("head").children) {
      const active = th.dataset.key === state.sort.key && !state.sort.defaulted;
      if (active) th.setAttribute("aria-sort", state.sort.dir > 0 ? "ascending" : "descending");
      else th.removeAttribute("aria-sort");
    }
  }

  function matches(row) {
    if (state.filter === "all") return true;
    for (const goal of state.goals) {
      const item = row.items.get(goal);
      const status = item ? item.status : "no_work";
      if (status === state.filter) return true;
      if (state.filter === "complete" && status === "complete_max_work") return true;
    }
    return false;
  }

  function visibleOrder() {
    const regs = state.order.filter((reg) => matches(state.rows.get(reg)));
    if (state.sort.defaulted) return regs;
    const { key, dir } = state.sort;
    const value = (reg) => {
      // Named learners by name, then the others by id.
      if (key === "learner") {
        const name = own(state.names.registrations, reg);
        return name ? "0" + name.toLocaleLowerCase() : "1" + reg;
      }
      const item = state.rows.get(reg).items.get(key);
      return item ? item.progress : -1;
    };
    return regs.sort((a, b) => {
      const va = value(a);
      const vb = value(b);
      if (va < vb) return -dir;
      if (va > vb) return dir;
      return a < b ? -1 : a > b ? 1 : 0;
    });
  }

  function buildRow(reg, row) {
    const tr = document.createElement("tr");
    tr.dataset.reg = reg;
    const th = document.createElement("td");
    th.className = "learner";
    const button = named(document.createElement("button"), learnerName(reg), reg);
    button.type = "button";
    button.addEventListener("click", () => selectLearner(reg));
    th.append(button);
    tr.append(th);
    for (const goal of state.goals) {
      const td = document.createElement("td");
      td.dataset.goal = goal;
      fillCell(td, row.items.get(goal));
      row.cells.set(goal, td);
      tr.append(td);
    }
    row.tr = tr;
    return tr;
  }

  function fillCell(td, item) {
    const status = item ? item.status : "no_work";
    const progress = item ? item.progress : 0;
    const work = item ? item.work_remaining : -1;
    td.dataset.status = status;
    td.dataset.progress = String(progress);
    td.dataset.work = String(work);
    td.textContent = "";
    const cell = document.createElement("div");
    cell.className = "cell";
    const badge = document.createElement("span");
    badge.className = "status s-" + status;
    badge.textContent = STATUS[status] || status;
    const outer = document.createElement("div");
    outer.className = "bar-outer";
    outer.setAttribute("role", "progressbar");
    outer.setAttribute("aria-valuemin", "0");
    outer.setAttribute("aria-valuemax", "100");
    outer.setAttribute("aria-valuenow", String(Math.round(progress * 100)));
    outer.title = `${Math.round(progress * 100)} % progress`;
    const inner = document.createElement("div");
    inner.className = "bar-inner";
    inner.style.width = `${Math.max(0, Math.min(1, progress)) * 100}%`;
    outer.append(inner);
    const left = document.createElement("span");
    left.className = "work";
    left.textContent = work < 0 ? "–" : String(work);
    left.title = work < 0 ? "not enough data to estimate" : `${work} more items expected`;
    cell.append(badge, outer, left);
    td.append(cell);
  }

  function renderBody() {
    const body = $("rows");
    const fragment = document.createDocumentFragment();
    const shown = visibleOrder();
    for (const reg of shown) {
      const row = state.rows.get(reg);
      fragment.append(row.tr || buildRow(reg, row));
    }
    body.textContent = "";
    body.append(fragment);
    $("count").textContent = `${shown.length} of ${state.order.length} learners`;
    renderSummary();
  }

  function renderSummary() {
    const box = $("summary");
    box.textContent = "";
    for (const goal of state.goals) {
      const counts = {};
      for (const row of state.rows.values()) {
        const item = row.items.get(goal);
        const status = item ? item.status : "no_work";
        counts[status] = (counts[status] || 0) + 1;
      }
      const line = document.createElement("div");
      line.dataset.goal = goal;
      const parts = SUMMARY_ORDER.filter((s) => counts[s]).map((s) => `${counts[s]} ${STATUS[s].toLowerCase()}`);
      line.textContent = `${goalName(goal)}: ${parts.join(" · ") || "no learners"}`;
      line.title = goal;
      box.append(line);
    }
  }

  // -- learner detail ---------------------------------------------------------

  function selectLearner(reg) {
    state.selected = reg;
    renderDetail(reg);
    for (const goal of state.goals) loadHistory(reg, goal);
  }

  function renderDetail(reg) {
    const aside = $("detail");
    const row = state.rows.get(reg);
    aside.textContent = "";
    const title = named(document.createElement("h2"), learnerName(reg), reg);
    const id = document.createElement("p");
    id.className = "id";
    id.textContent = `Registration ${reg}`;
    const close = document.createElement("button");
    close.type = "button";
    close.textContent = "Close";
    close.addEventListener("click", () => {
      state.selected = null;
      aside.hidden = true;
    });
    aside.append(title, id, close);
    for (const goal of state.goals) {
      const item = row.items.get(goal);
      aside.append(named(document.createElement("h3"), goalName(goal), goal));
      if (!item) continue;
      const summary = document.createElement("p");
      const work = item.work_remaining < 0 ? "not enough data" : `${item.work_remaining} items left`;
      summary.textContent = `${STATUS[item.status] || item.status}, ${Math.round(item.progress * 100)} %, ${work}`;
      aside.append(summary, historyBox(reg, goal));
      aside.append(
        table(
          ["Target", "Status", "Progress"],
          (item.targets || []).map((t) => [
            targetName(goal, t.target_id || t.module_id),
            STATUS[t.status] || t.status,
            `${Math.round(t.progress * 100)} %`,
          ]),
          "targets",
        ),
      );
      if (item.topic_work_remaining) {
        aside.append(
          table(
            ["Topic", "Work remaining"],
            item.topic_work_remaining.map((t) => [
              t.topic_id,
              t.average_work_remaining < 0 ? "–" : String(t.average_work_remaining),
            ]),
            "topics",
          ),
        );
      }
    }
    aside.hidden = false;
  }

  function table(headers, rows, kind) {
    const t = document.createElement("table");
    t.className = kind;
    const head = t.createTHead().insertRow();
    for (const h of headers) {
      const th = document.createElement("th");
      th.textContent = h;
      head.append(th);
    }
    const body = t.createTBody();
    for (const cells of rows) {
      const tr = body.insertRow();
      for (const c of cells) tr.insertCell().textContent = c;
    }
    return t;
  }

  // -- learner history: progress over time, the status as coloured bands ------

  const tuning = { historyPageSize: 100 }; // the tests page with fewer
  const SVG = "http://www.w3.org/2000/svg";
  const CHART = { w: 300, h: 56, pad: 3, tail: 24 }; // tail: the latest status, up to now

  // All pages of the timeline (at most 32 points); one fetch at a time per
  // goal, and once more if the learner's row changed meanwhile.
  async function loadHistory(reg, goal) {
    const key = reg + "\n" + goal;
    const before = state.history.get(key);
    if (before && before.busy) {
      before.again = true;
      return;
    }
    state.history.set(key, Object.assign({}, before, { busy: true }));
    let result;
    try {
      const points = [];
      let offset = 0;
      do {
        const path =
          `registrations/${encodeURIComponent(reg)}/metrics/status-and-progress/history` +
          `?goal_id=${encodeURIComponent(goal)}&points_per_page=${tuning.historyPageSize}&point_offset=${offset}`;
        const page = await (await api(path)).json();
        points.push(...page.points);
        offset = page.next ? page.next.point_offset : -1;
      } while (offset > 0 && points.length < 1000);
      result = { points };
    } catch (err) {
      result = { error: err.status ? `${err.status}, ${err.message}` : err.message };
    }
    const now = state.history.get(key);
    state.history.set(key, result);
    if (state.selected === reg) {
      const box = [...$("detail").querySelectorAll(".history")].find((b) => b.dataset.goal === goal);
      if (box) box.replaceWith(historyBox(reg, goal));
    }
    if (now && now.again) loadHistory(reg, goal);
  }

  function svg(name, attrs, parent) {
    const el = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
    parent.append(el);
    return el;
  }

  function when(at) {
    return new Date(at).toLocaleString([], { dateStyle: "short", timeStyle: "medium" });
  }

  function historyBox(reg, goal) {
    const box = document.createElement("div");
    box.className = "history";
    box.dataset.goal = goal;
    const entry = state.history.get(reg + "\n" + goal);
    const note = (text) => {
      const p = document.createElement("p");
      p.className = "hint";
      p.textContent = text;
      box.append(p);
      return box;
    };
    if (!entry || (entry.busy && !entry.points)) return note("Loading history…");
    if (entry.error) return note(`History unavailable: ${entry.error}`);
    const points = entry.points;
    if (!points.length) return note("No history yet.");
    const { w, h, pad, tail } = CHART;
    const times = points.map((p) => Date.parse(p.at));
    const span = times[times.length - 1] - times[0];
    const r = (v) => Math.round(v * 10) / 10;
    const x = (i) => (span > 0 ? r(((times[i] - times[0]) / span) * (w - tail)) : 0);
    const y = (p) => r(pad + (1 - Math.max(0, Math.min(1, p.progress))) * (h - 2 * pad));
    const chart = svg("svg", { viewBox: `0 0 ${w} ${h}`, class: "chart", role: "img" }, box);
    svg("title", {}, chart).textContent =
      `Progress over time, ${points.length} point${points.length > 1 ? "s" : ""} ` +
      `from ${when(points[0].at)} to ${when(points[points.length - 1].at)}`;
    let d = "";
    points.forEach((p, i) => {
      // A point's status and progress hold until the next point; the last
      // one's until now (the tail, or the whole width for a single point).
      const x0 = x(i);
      const x1 = i + 1 < points.length ? x(i + 1) : w;
      const band = svg("rect", { x: x0, y: 0, width: r(x1 - x0), height: h, class: "band s-" + p.status }, chart);
      band.dataset.status = p.status;
      const work = p.work_remaining < 0 ? "work remaining unknown" : `${p.work_remaining} items left`;
      svg("title", {}, band).textContent =
        `${when(p.at)}: ${STATUS[p.status] || p.status}, ${Math.round(p.progress * 100)} %, ${work}`;
      d += i ? ` H${x0} V${y(p)}` : `M${x0} ${y(p)}`;
    });
    svg("path", { d: d + ` H${w}`, class: "line" }, chart);
    points.forEach((p, i) => svg("circle", { cx: x(i), cy: y(p), r: 2, class: "dot" }, chart));
    const legend = document.createElement("p");
    legend.className = "legend hint";
    for (const status of new Set(points.map((p) => p.status))) {
      const swatch = document.createElement("span");
      swatch.className = "status s-" + status;
      swatch.textContent = STATUS[status] || status;
      legend.append(swatch, " ");
    }
    legend.append(`${when(points[0].at)} – ${when(points[points.length - 1].at)}`);
    box.append(legend);
    return box;
  }

  // -- CSV export -------------------------------------------------------------

  // OWASP CSV injection: a spreadsheet runs a text cell that starts with one of
  // these as a formula (ids may start with "-"), so such a cell gets a leading
  // quote. Numbers are written as numbers: -1 is not a formula.
  const FORMULA_START = /^[=+\-@\t\r]/;

  function csvField(value) {
    let s = String(value);
    if (typeof value !== "number" && FORMULA_START.test(s)) s = "'" + s;
    return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
  }

  // Columns: the registration id, the learner's name (empty without one),
  // then per goal its status, progress and work remaining, headed by the
  // goal's title and id ("Fractions [goal-1] status") or its id alone.
  function toCsv() {
    const header = ["registration_id", "learner_name"];
    for (const g of state.goals) {
      const title = own(own(state.names.goals, g), "title");
      const head = title ? `${title} [${g}]` : g;
      header.push(`${head} status`, `${head} progress`, `${head} work_remaining`);
    }
    const lines = [header.map(csvField).join(",")];
    for (const reg of visibleOrder()) {
      const row = state.rows.get(reg);
      const fields = [reg, own(state.names.registrations, reg) || ""];
      for (const g of state.goals) {
        const item = row.items.get(g);
        fields.push(item ? item.status : "", item ? item.progress : "", item ? item.work_remaining : "");
      }
      lines.push(fields.map(csvField).join(","));
    }
    return lines.join("\r\n") + "\r\n";
  }

  function exportCsv() {
    const blob = new Blob([toCsv()], { type: "text/csv" });
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = `status-and-progress-${state.li}.csv`;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  }

  // -- wiring -------------------------------------------------------------------

  $("sign-in-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    state.token = $("token").value.trim();
    $("token").value = "";
    sessionStorage.setItem(TOKEN_KEY, state.token);
    show("choose");
    showMessage("");
    const { li, goals } = readHash();
    if (li) {
      $("li").value = li;
      loadGoals(li, goals);
    }
  });
  $("li-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    loadGoals($("li").value.trim(), null);
  });
  $("goals-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    openBoard();
  });
  $("filter").addEventListener("change", () => {
    state.filter = $("filter").value;
    renderBody();
  });
  $("export").addEventListener("click", exportCsv);
  $("change").addEventListener("click", () => {
    stopStream();
    setLive("off", "offline");
    show("choose");
  });
  $("sign-out").addEventListener("click", () => signOut(""));

  window.masteryDashboard = { toCsv, csvField, tuning }; // for the browser tests

  if (state.token) {
    show("choose");
    const { li, goals } = readHash();
    if (li) {
      $("li").value = li;
      loadGoals(li, goals);
    }
  } else {
    show("sign-in");
  }
})();
