// The dashboard's page: every action is one call to the client's JSON API (README,
// "Dashboard"), with the access token in a header; what changes arrives on a stream of
// events, read with fetch (which sends the header, unlike EventSource).
"use strict";

// The access token comes in the URL's fragment (#token=...), which the browser never sends
// to any server; it is kept in this tab's sessionStorage (this origin's only, port
// included) and taken out of the address bar and the history. Never in a cookie: cookies
// ignore ports, and every server on 127.0.0.1 would get it (issue 21).
const TOKEN = (() => {
  const fromUrl = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fromUrl) {
    sessionStorage.setItem("token", fromUrl);
    history.replaceState(null, "", location.pathname + location.search);
    return fromUrl;
  }
  return sessionStorage.getItem("token") || "";
})();
const NO_TOKEN = "this page needs the client's access token: open the URL the client printed (type web in its REPL)";
const COLORS = ["#2563eb", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#06b6d4", "#ec4899",
  "#84cc16", "#f97316", "#14b8a6", "#6366f1", "#a855f7"];
const RESUMED = 255;
let currentGroup = null;
let user = null;

const $ = (sel) => document.querySelector(sel);

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "class") e.className = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : String(c));
  return e;
}

// What each table last showed, so that a refresh that brings nothing new leaves it alone:
// a path being typed, the focus, and a button about to be clicked survive the timer.
const shown = new Map();
function changed(key, data) {
  const text = JSON.stringify(data);
  if (shown.get(key) === text) return false;
  shown.set(key, text);
  return true;
}

// An error stays until it is dismissed (its ×) or the user acts again: the page's own
// refreshes never clear it (issue 20: it vanished within 1.5 s).
function showError(message) {
  const box = $("#error");
  box.replaceChildren();
  if (message) {
    box.append(el("span", {}, "error: " + message),
      el("button", { class: "plain", title: "dismiss", onclick: () => showError(null) }, "×"));
  }
  box.hidden = !message;
}

// Runs a refresh the page makes by itself: an error shows, but none is cleared.
async function quietly(fn) {
  try {
    await fn();
  } catch (e) {
    showError(e.message);
  }
}

async function api(name, body) {
  if (!TOKEN) throw new Error(NO_TOKEN);
  const options = { headers: { "Authorization": "Bearer " + TOKEN } };
  if (body !== undefined) {
    options.method = "POST";
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch("/api/" + name, options);
  } catch (e) {
    throw new Error("the client does not answer (" + e.message + ")");
  }
  const data = await response.json().catch(() => ({ error: "bad answer from the client" }));
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

// Runs an action; shows its error in the banner instead of failing silently.
async function act(fn) {
  try {
    showError(null);
    await fn();
  } catch (e) {
    showError(e.message);
  }
}

// Decimal units, as the REPL and limit_rate use (issue 20: one convention everywhere).
function size(bytes) {
  const units = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  while (bytes >= 1000 && i < units.length - 1) { bytes /= 1000; i++; }
  return (i === 0 ? bytes : bytes.toFixed(1)) + " " + units[i];
}

async function refreshAccount() {
  renderAccount(await api("account"));
}

// Shows who is logged in; when that changed (here, in the REPL or in another tab), the
// groups are fetched again, as nothing else would bring them (issue 11: the tables stayed
// empty when the login was not made on this page).
function renderAccount(a) {
  const changed = a.user !== user;
  renderRates(a.rates);
  renderJoinNotices(a.join_requests || []);
  user = a.user;
  $("#account-line").textContent = a.user
    ? `${a.user} · tracker ${a.tracker || "?"} · peer ${a.listen}`
    : `not logged in · peer ${a.listen}`;
  $("#account-detail").textContent = a.user
    ? `Logged in as ${a.user}, through tracker ${a.tracker || "?"}; this peer serves pieces on ${a.listen}.`
    : "";
  $("#login-form").hidden = !!a.user;
  $("#logged-in").hidden = !a.user;
  for (const id of ["#groups", "#shares", "#peers"]) $(id).hidden = !a.user;
  if (changed) {
    currentGroup = null;
    $("#group-detail").hidden = true;
    $("#group-rows").replaceChildren();
    $("#share-rows").replaceChildren();
    shown.clear();
    if (a.user) quietly(refreshGroups);
  }
}

// Requests to join the user's groups, from the heartbeats: each stays in the banner until
// it is accepted or rejected, here, in the REPL or in another session (issue 20).
function renderJoinNotices(requests) {
  const box = $("#join-notices");
  if (!changed("join_requests", requests)) return;
  box.replaceChildren();
  for (const { group, user: who } of requests) {
    const decide = (action) => act(async () => {
      await api(action, { group, user: who });
      await refreshAccount();
      if (currentGroup === group) await refreshGroupDetail();
    });
    box.append(el("div", { "data-request": group + "/" + who },
      el("span", {}, `${who} asks to join group ${group}`),
      el("button", { onclick: () => decide("accept_request") }, "accept"),
      el("button", { class: "plain", onclick: () => decide("reject_request") }, "reject")));
  }
  box.hidden = requests.length === 0;
}

async function refreshGroups() {
  if (!user) return;
  const g = await api("groups");
  if (!changed("groups", g)) return;
  const rows = $("#group-rows");
  rows.replaceChildren();
  for (const group of g.all) {
    const member = g.mine.includes(group);
    const actions = member
      ? [el("button", { class: "plain", onclick: () => act(() => openGroup(group)) }, "open"), " ",
         el("button", { class: "plain", onclick: () => act(async () => {
           await api("leave_group", { group }); if (currentGroup === group) $("#group-detail").hidden = true;
           await refreshAll(); }) }, "leave")]
      : [el("button", { onclick: () => act(async () => {
           await api("join_group", { group }); showError(null); }) }, "ask to join")];
    rows.append(el("tr", { "data-group": group }, el("td", {}, group), el("td", {}, member ? "yes" : ""), el("td", {}, ...actions)));
  }
}

async function openGroup(group) {
  currentGroup = group;
  $("#current-group").textContent = group;
  $("#group-detail").hidden = false;
  await refreshGroupDetail();
}

async function refreshGroupDetail() {
  if (!currentGroup || !user) return;
  const group = currentGroup;
  const files = await api("files?group=" + encodeURIComponent(group));
  if (changed("files", { group, files })) renderFiles(group, files);
  // Pending requests are the owner's to see; anyone else is refused, and the box stays hidden.
  let requests = null;
  try {
    requests = await api("requests?group=" + encodeURIComponent(group));
  } catch (e) {
    requests = null;
  }
  if (changed("requests", { group, requests })) renderRequests(group, requests);
}

function renderFiles(group, files) {
  const rows = $("#file-rows");
  // Destinations being typed stay as they were.
  const typed = new Map([...rows.querySelectorAll("tr")].map((tr) => [tr.dataset.file, tr.querySelector("input").value]));
  rows.replaceChildren();
  for (const f of files.files) {
    const dest = el("input", { placeholder: "directory or new file path", size: "28" });
    dest.value = typed.get(f.name) || "";
    rows.append(el("tr", { "data-file": f.name },
      el("td", { title: "digest " + f.digest }, f.files === undefined ? f.name : f.name + "/"), el("td", {}, size(f.size)), el("td", {}, f.sharers),
      el("td", {}, dest, " ", el("button", { onclick: () => act(async () => {
        // A folder (it has a file count) is fetched whole: `name/`.
        await api("download_file", { group, file: f.files === undefined ? f.name : f.name + "/", destination: dest.value });
      }) }, "download"))));
  }
}

function renderRequests(group, r) {
  const list = $("#request-rows");
  list.replaceChildren();
  $("#requests-box").hidden = !r;
  if (!r) return;
  if (r.users.length === 0) list.append(el("li", { class: "muted" }, "none"));
  for (const u of r.users) {
    list.append(el("li", { "data-user": u }, u, " ",
      el("button", { onclick: () => act(async () => { await api("accept_request", { group, user: u }); await refreshGroupDetail(); }) }, "accept"), " ",
      el("button", { class: "plain", onclick: () => act(async () => { await api("reject_request", { group, user: u }); await refreshGroupDetail(); }) }, "reject")));
  }
}

async function refreshShares() {
  if (!user) return;
  renderShares(await api("shares"));
}

function renderShares(s) {
  const rows = $("#share-rows");
  rows.replaceChildren();
  for (const f of s.shares) {
    rows.append(el("tr", { "data-share": f.group + "/" + f.name }, el("td", {}, f.group), el("td", {}, f.item || f.name),
      el("td", {}, `${f.pieces_have}/${f.pieces}`), el("td", {}, size(f.size)),
      el("td", { class: "muted" }, f.downloading_to ? "→ " + f.downloading_to : f.path),
      el("td", {}, el("button", { class: "plain", onclick: () => act(async () => {
        await api("stop_share", { group: f.group, file: f.name }); await refreshShares(); }) }, "stop sharing"))));
  }
}

// The caps as placeholders (what is set now), unless the user is typing there.
function renderRates(r) {
  if (!r) return;
  // Powers of 1000, as limit_rate takes and the REPL shows them.
  const shown = (v) => v === null ? "unlimited"
    : v >= 1e9 ? (v / 1e9).toFixed(1) + " GB/s" : v >= 1e6 ? (v / 1e6).toFixed(1) + " MB/s"
    : v >= 1e3 ? (v / 1e3).toFixed(1) + " kB/s" : v + " B/s";
  const form = $("#rates-form");
  form.up.placeholder = shown(r.up);
  form.down.placeholder = shown(r.down);
}

function renderDownloads(data) {
  const box = $("#download-rows");
  if (!data.downloads || data.downloads.length === 0) {
    box.replaceChildren(el("p", { class: "muted" }, "No download in this session."));
    return;
  }
  box.replaceChildren();
  for (const d of data.downloads.slice().reverse()) {
    const pct = d.size > 0 ? (100 * d.bytes_done / d.size) : 100;
    // The recent rate and the time left at it; "stalled" when nothing arrived lately.
    const rate = d.state === "downloading" ? d.recent_bytes_per_sec : d.bytes_per_sec;
    const eta = d.state !== "downloading" ? ""
      : d.eta_seconds !== null ? d.eta_seconds + " s left"
      : d.seconds >= 5 ? "stalled: no peer sends" : "connecting";
    const status = d.state === "failed" ? "failed: " + d.reason
      : d.state === "complete" ? `done in ${d.seconds.toFixed(2)} s`
      : d.state === "paused" ? `${pct.toFixed(0)}% · paused` : `${pct.toFixed(0)}%`;
    const control = (name, label) => el("button", { class: "plain", "data-action": name,
      onclick: () => act(async () => { await api(name, { group: d.group, file: d.file }); }) }, label);
    const controls = el("span", { class: "controls" },
      ...(d.state === "downloading" ? [control("pause", "pause"), control("cancel", "cancel")] : []),
      ...(d.state === "paused" ? [control("resume", "resume"), control("cancel", "cancel")] : []));
    const bar = el("div", { class: "bar " + (d.state === "complete" ? "done" : d.state === "failed" ? "failed" : "") },
      el("div", { style: `width:${pct}%` }));
    const names = d.source_names || d.sources;
    const map = el("div", { class: "pieces" });
    d.piece_map.forEach((src, i) => {
      const from = src === 0 ? "missing" : src === RESUMED ? "resumed from disk"
        : src <= names.length ? "from " + names[src - 1] : "from another peer";
      const cell = el("span", { title: `piece ${i}: ${from}` });
      if (src === RESUMED) cell.style.background = "#9ca3af";
      else if (src > 0) cell.style.background = COLORS[(src - 1) % COLORS.length];
      map.append(cell);
    });
    const legend = el("div", { class: "legend muted" }, ...d.sources.map((addr, i) =>
      el("span", {}, el("i", { style: "background:" + COLORS[i % COLORS.length] }), `${names[i]} (${d.from_peers[addr] || 0} pieces)`)));
    box.append(el("div", { class: "dl", "data-state": d.state, "data-id": d.id },
      el("div", { class: "dl-head" },
        el("strong", {}, `[${d.group}] ${d.item || d.file}`),
        el("span", { class: "muted" }, `→ ${d.destination}`),
        el("span", { class: "status" }, status),
        el("span", {}, `${size(d.bytes_done)} / ${size(d.size)} · ${size(rate)}/s · ${d.peers} peers ${eta ? "· " + eta : ""}`),
        controls),
      bar, map, legend, fileTree(d), chart(d.chart, names)));
  }
}

// A folder's download (issue 23): its files as a tree, a directory line each time the
// directory changes, each file with its own progress bar.
function fileTree(d) {
  if (!d.files || d.files.length === 0) return el("div", {});
  const tree = el("div", { class: "files" });
  let dir = null;
  for (const f of d.files) {
    const parts = f.path.split("/");
    const parent = parts.slice(0, -1).join("/");
    if (parent !== dir && parent !== "") {
      tree.append(el("div", { class: "dir", style: `padding-left:${(parts.length - 2) * 14}px` }, parent + "/"));
    }
    dir = parent;
    const pct = f.pieces === 0 ? (d.state === "complete" ? 100 : 0) : 100 * f.pieces_have / f.pieces;
    tree.append(el("div", { class: "file", "data-path": f.path, style: `padding-left:${(parts.length - 1) * 14}px` },
      el("span", { class: "name" }, parts[parts.length - 1]),
      el("span", { class: "bar" + (pct >= 100 ? " done" : "") }, el("div", { style: `width:${pct}%` })),
      el("span", { class: "muted" }, `${size(f.size)} · ${f.pieces_have}/${f.pieces}`)));
  }
  const more = d.files_total > d.files.length ? [el("div", { class: "muted" }, `and ${d.files_total - d.files.length} more files`)] : [];
  // Not through `el`'s attributes: a name that starts with "on" is an event there.
  const details = el("details", { class: "tree" }, el("summary", {}, `${d.files_total} files`), tree, ...more);
  details.open = true;
  return details;
}

// Throughput over time: a column per step of the download, stacked by peer (the bytes per
// second received from each; the client buckets the arrival times of the pieces).
function chart(c, names) {
  const NS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("class", "chart");
  svg.setAttribute("viewBox", "0 0 600 100");
  svg.setAttribute("preserveAspectRatio", "none");
  const box = el("div", { class: "chart-box" });
  if (!c || !c.rates) return box;
  const n = Math.max(1, ...c.rates.map((r) => r.length));
  const totals = Array.from({ length: n }, (_, j) => c.rates.reduce((sum, r) => sum + (r[j] || 0), 0));
  const max = Math.max(1, ...totals);
  const w = 600 / n;
  for (let j = 0; j < n; j++) {
    let base = 100;
    c.rates.forEach((rates, i) => {
      const v = rates[j] || 0;
      if (v <= 0) return;
      const h = (v / max) * 95;
      base -= h;
      const r = document.createElementNS(NS, "rect");
      const attrs = { x: (j * w).toFixed(2), y: base.toFixed(2), width: Math.max(w - 1, 0.5).toFixed(2), height: h.toFixed(2),
        fill: i < names.length ? COLORS[i % COLORS.length] : "#9ca3af", "data-peer": i < names.length ? names[i] : "others" };
      for (const [k, val] of Object.entries(attrs)) r.setAttribute(k, val);
      const title = document.createElementNS(NS, "title");
      title.textContent = `${attrs["data-peer"]}: ${size(v)}/s at ${((j * c.step_ms) / 1000).toFixed(2)} s`;
      r.append(title);
      svg.append(r);
    });
  }
  box.append(el("div", { class: "chart-labels muted" },
    el("span", {}, "throughput per peer, stacked"), el("span", {}, `peak ${size(max)}/s`),
    el("span", {}, `${((n * c.step_ms) / 1000).toFixed(1)} s, steps of ${c.step_ms} ms`)), svg);
  return box;
}

function renderPeers(data) {
  const rows = $("#peer-rows");
  rows.replaceChildren();
  const cell = (v) => el("td", { class: "num" }, v === null || v === undefined ? "—" : v);
  for (const p of data.peers || []) {
    rows.append(el("tr", { "data-peer": `${p.user}@${p.addr}`, class: p.connected ? "" : "muted" },
      el("td", {}, p.user || "?"),
      el("td", {}, p.addr, ...(p.path ? [el("div", { class: "muted path" }, p.path)] : [])),
      el("td", {}, `[${p.group}] ${p.file}`),
      cell(p.has === null ? null : p.pieces ? `${p.has}/${p.pieces}` : p.has),
      cell(p.served_me), cell(p.served_them)));
  }
  $("#peers-empty").hidden = (data.peers || []).length > 0;
}

function clock(ms) {
  return new Date(ms).toLocaleTimeString([], { hour12: false });
}

function renderTrackers(data) {
  const rows = $("#tracker-rows");
  rows.replaceChildren();
  for (const t of data.trackers || []) {
    const word = t.serving ? "serving this client" : t.state;
    const cls = "state-" + (t.serving ? "connected" : t.state.split(" ")[0]);
    rows.append(el("tr", { "data-tracker": t.addr, class: t.serving ? "serving" : "" },
      el("td", {}, t.id === null ? "?" : "tracker " + t.id), el("td", {}, t.addr),
      el("td", { class: "role" }, t.role || "—"),
      el("td", { class: cls }, word + (t.reason ? ": " + t.reason : "") + (t.key_listed === false ? " (no key listed yet)" : "")),
      el("td", { class: "muted time" }, t.since_ms ? clock(t.since_ms) : "")));
  }
  const st = data.status;
  $("#role-head").textContent = st ? `role (as tracker ${st.id} sees it)` : "role";
  $("#tracker-status").textContent = st
    ? `Tracker ${st.id} at ${clock(st.at_ms)}: ${st.role}, term ${st.term}, voters ${st.voters.join(", ")}, reaching ${st.reach} of ${st.voters.length}, commit ${st.commit}, applied ${st.applied}.`
    : "";
  const list = $("#tracker-events");
  list.replaceChildren(...(data.events || []).slice().reverse().map((e) =>
    el("li", {}, el("time", {}, clock(e.at_ms)), e.text)));
  if (!list.children.length) list.append(el("li", { class: "muted" }, "No event yet."));
}

// The client pushes what changes without a tracker call, each as an event of that name,
// in the Server-Sent Events format: "event: NAME\ndata: JSON\n\n", and ": comment\n\n"
// lines to keep a quiet stream alive.
const RENDER = { account: renderAccount, shares: renderShares, downloads: renderDownloads,
  peers: renderPeers, trackers: renderTrackers };

async function readEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (!RENDER[name] || !data.length) continue;
      // One event that cannot be shown must not end the stream.
      try { RENDER[name](JSON.parse(data.join("\n"))); } catch (e) { console.error(e); }
    }
  }
}

// Listens as long as the page is open: a stream that ends or fails (the client restarted)
// is opened again after a pause, as EventSource would; a refused token stops it.
async function listen() {
  if (!TOKEN) return;
  for (;;) {
    try {
      const response = await fetch("/api/events", { headers: { "Authorization": "Bearer " + TOKEN } });
      if (response.ok) {
        await readEvents(response.body);
      } else {
        const data = await response.json().catch(() => ({}));
        showError(data.error || response.statusText);
        if (response.status === 401 || response.status === 403) return;
      }
    } catch (e) {
      // The client went away or the stream broke: try again below.
    }
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

async function refreshAll() {
  await refreshAccount();
  await Promise.all([refreshGroups(), refreshShares(), refreshGroupDetail()]);
}

$("#login-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const form = e.target;
  const action = e.submitter ? e.submitter.dataset.action : "login";
  act(async () => {
    const body = { user: form.user.value, password: form.password.value };
    if (action === "create_user") await api("create_user", body);
    await api("login", body);
    form.password.value = "";
    await refreshAll();
  });
});
$("#logout").addEventListener("click", () => act(async () => { await api("logout", {}); await refreshAll(); }));
$("#logout-all").addEventListener("click", () => act(async () => { await api("logout", { everywhere: true }); await refreshAll(); }));
$("#create-group-form").addEventListener("submit", (e) => {
  e.preventDefault();
  act(async () => { const group = e.target.group.value; await api("create_group", { group }); e.target.reset(); await refreshGroups(); await openGroup(group); });
});
$("#rates-form").addEventListener("submit", (e) => {
  e.preventDefault();
  act(async () => {
    const form = e.target;
    let rates;
    for (const direction of ["up", "down"]) {
      const value = form[direction].value.trim();
      if (value !== "") rates = await api("limit_rate", { direction, rate: value });
    }
    form.reset();
    if (rates) renderRates(rates);
  });
});
$("#upload-form").addEventListener("submit", (e) => {
  e.preventDefault();
  act(async () => { await api("upload_file", { path: e.target.path.value, group: currentGroup }); e.target.reset(); await refreshGroupDetail(); await refreshShares(); });
});

$("#remove-form").addEventListener("submit", (e) => {
  e.preventDefault();
  act(async () => { await api("remove_member", { group: currentGroup, user: e.target.user.value }); e.target.reset(); await refreshGroupDetail(); });
});

act(refreshAll);
listen();
// Groups, files and requests change on the trackers: look again now and then.
setInterval(() => { if (!document.hidden) quietly(async () => { await refreshGroups(); await refreshGroupDetail(); }); }, 5000);
