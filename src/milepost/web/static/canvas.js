// The journey canvas: a tidy tree of milestones in SVG, with pan and zoom. The structure comes with
// the page; sizes are fetched per audience afterwards and drawn as they arrive.
import { api, dialog, dryRunTable, el, fmt, popover, sizeNode, sizeValue, toast } from "./common.js";

const NODE_W = 252;
const H_GAP = 28;
const V_GAP = 78;
const ROOT_H = 104;
const PLUS_H = 34;
const SVG_NS = "http://www.w3.org/2000/svg";
const FETCHERS = 3;
const POLL_MS = 1000;
const MIN_ZOOM = 0.08; // Fit shows a whole journey, however wide; zoom in to read a part

let data = JSON.parse(document.getElementById("canvas-data").textContent);
const journeyId = data.journey.id;
const sizes = new Map(); // audience id -> size object
const shares = new Map(); // audience id -> share of the parent (estimates only)
let rootSize = null;
const view = { x: 0, y: 0, k: 1 };
let fitted = false;

const svg = document.getElementById("canvas-svg");
const viewport = document.getElementById("viewport");
const canvas = document.getElementById("canvas");

// ---- structure ------------------------------------------------------------------------------

function tree() {
  const byId = new Map(data.nodes.map((n) => [n.id, n]));
  const kids = new Map();
  for (const n of data.nodes) {
    const key = n.parent_id ?? 0;
    if (!kids.has(key)) kids.set(key, []);
    kids.get(key).push(n);
  }
  for (const list of kids.values()) list.sort((a, b) => a.remaining - b.remaining || a.position - b.position);
  return { byId, kids };
}

const nodeHeight = (n) => 120 + 22 * n.connections.length;

/** Leaves take consecutive columns; a parent is centred over its children. */
function layout() {
  const { byId, kids } = tree();
  const pos = new Map();
  const depthH = [ROOT_H];
  let column = 0;
  const place = (n, depth) => {
    const children = kids.get(n.id) ?? [];
    depthH[depth] = Math.max(depthH[depth] ?? 0, nodeHeight(n));
    let x;
    if (!children.length) {
      x = column * (NODE_W + H_GAP);
      column += 1;
    } else {
      const xs = children.map((c) => place(c, depth + 1));
      x = (xs[0] + xs[xs.length - 1]) / 2;
    }
    pos.set(n.id, { x, depth });
    return x;
  };
  const top = kids.get(0) ?? [];
  const xs = top.map((n) => place(n, 1));
  const rootX = xs.length ? (xs[0] + xs[xs.length - 1]) / 2 : 0;
  const rowY = [0];
  for (let d = 1; d < depthH.length; d++) rowY[d] = rowY[d - 1] + depthH[d - 1] + PLUS_H + V_GAP;
  for (const p of pos.values()) p.y = rowY[p.depth];
  return { byId, kids, pos, root: { x: rootX, y: 0 } };
}

// ---- drawing --------------------------------------------------------------------------------

function svgEl(tag, attrs) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

function foreign(x, y, w, h, content) {
  const fo = svgEl("foreignObject", { x, y, width: w, height: h });
  fo.append(content);
  return fo;
}

function badge(n) {
  if (n.status === "activated") return el("span", { class: "badge activated", "data-badge": "activated", text: "ACTIVATED" });
  if (n.status === "calculated")
    return el("span", { class: "badge calculated", "data-badge": "calculated", text: "CALCULATING", title: "Kept exact in real time at no credit cost, because an audience below it or referring to it is activated" });
  return null;
}

function connectionRow(c) {
  return el(
    "li",
    { class: `conn status-${c.status} health-${c.health}`, "data-connection": c.id, "data-action": "connection", title: `${c.type} output · ${c.status} · delivery ${c.health}` },
    el("span", { class: "dot" }),
    el("span", { class: "conn-name", text: c.output }),
    el("span", { class: "conn-state", text: c.health === "ok" ? c.status : `${c.status} · ${c.health}` }),
  );
}

function card(n, siblings) {
  const idx = siblings.indexOf(n);
  const regular = siblings.filter((s) => !s.remaining);
  const canLeft = !n.remaining && idx > 0;
  const canRight = !n.remaining && idx < regular.length - 1;
  const node = el(
    "div",
    { class: `node status-${n.status}${n.remaining ? " remaining" : ""}`, "data-node": n.id, "data-audience": n.audience_id, "data-name": n.name },
    el("div", { class: "node-top" }, el("span", { class: "node-name", text: n.name, title: n.name }), badge(n)),
    el("div", { class: "node-id" }, `Audience ID ${n.audience_id}`, n.remaining ? el("span", { class: "tag", text: "remaining users" }) : null),
    el(
      "div",
      { class: "node-size" },
      el("span", { class: "size-slot", "data-size": n.audience_id }, sizeNode(n.calculating ? { kind: "calculating" } : sizes.get(n.audience_id))),
      el("span", { class: "dropoff", "data-dropoff": n.audience_id }),
    ),
    n.connections.length ? el("ul", { class: "node-conns" }, n.connections.map(connectionRow)) : null,
    el(
      "div",
      { class: "node-actions" },
      el("button", { class: "icon", "data-action": "left", disabled: !canLeft, title: "Move left (earlier siblings claim users first)", "aria-label": "Move left" }, "◀"),
      el("button", { class: "icon", "data-action": "right", disabled: !canRight, title: "Move right", "aria-label": "Move right" }, "▶"),
      el("span", { class: "spacer" }),
      el("button", { class: "link", "data-action": "edit", title: n.remaining ? "Rename; its criteria are derived from its siblings" : "Edit name and criteria" }, "Edit"),
      el(
        "button",
        { class: "link danger", "data-action": "delete", "aria-disabled": n.delete_block ? "true" : "false", title: n.delete_block ?? "Delete this milestone and its audience" },
        "Delete",
      ),
    ),
  );
  if (sizes.has(n.audience_id) || n.calculating) node.classList.add("sized");
  return node;
}

function rootCard() {
  const inputs = data.journey.inputs;
  return el(
    "div",
    { class: "node root", "data-root": "" },
    el("div", { class: "node-top" }, el("span", { class: "node-name", text: "Inputs" })),
    el("div", { class: "chips" }, inputs.map((i) => el("span", { class: `chip${i.enabled ? "" : " off"}`, title: `${i.workspace} · ${i.platform}${i.enabled ? "" : " · disabled"}`, text: i.name }))),
    el("div", { class: "node-size" }, el("span", { class: "size-slot", "data-size": "root" }, sizeNode(rootSize)), el("span", { class: "muted small", text: " in the journey" })),
  );
}

function plusButton(action, label, extra = {}) {
  return el("button", { class: "plus", "data-action": action, title: label, "aria-label": label, ...extra }, "+");
}

function draw() {
  // Fit before the cards exist: reading the canvas's size then does not lay out 30 cards at once.
  if (!fitted) fit();
  const { kids, pos, root } = layout();
  viewport.replaceChildren();
  const edges = svgEl("g", { class: "edges" });
  const cards = svgEl("g", { class: "cards" });
  viewport.append(edges, cards);
  const cx = (x) => x + NODE_W / 2;
  const top = kids.get(0) ?? [];
  const drawEdge = (x1, y1, x2, y2, cls) => {
    const my = (y1 + y2) / 2;
    edges.append(svgEl("path", { d: `M${x1},${y1} C${x1},${my} ${x2},${my} ${x2},${y2}`, class: cls }));
  };
  // root
  const rootBox = el("div", { class: "node-wrap" }, rootCard(), plusButton("add-top", "Add a milestone under the inputs"));
  cards.append(foreign(root.x, root.y, NODE_W, ROOT_H + PLUS_H, rootBox));
  for (const n of top) drawEdge(cx(root.x), ROOT_H + PLUS_H - 6, cx(pos.get(n.id).x), pos.get(n.id).y - 2, `edge status-${n.status}`);
  for (const n of data.nodes) {
    const p = pos.get(n.id);
    const siblings = kids.get(n.parent_id ?? 0) ?? [];
    const h = nodeHeight(n);
    for (const c of kids.get(n.id) ?? []) {
      const q = pos.get(c.id);
      drawEdge(cx(p.x), p.y + h + PLUS_H - 6, cx(q.x), q.y - 2, `edge status-${c.status}`);
    }
    const wrap = el("div", { class: "node-wrap" }, card(n, siblings), plusButton("plus", "Add a milestone or connect an output", { "data-for": n.id }));
    cards.append(foreign(p.x, p.y, NODE_W, h + PLUS_H, wrap));
    if (!n.remaining) {
      const split = el("button", { class: "split", "data-action": "split", "data-for": n.id, title: "Split: add a path beside this milestone, or a remaining users split", "aria-label": "Split" });
      split.innerHTML = '<svg viewBox="0 0 16 16" aria-hidden="true"><path d="M8 1.5v5M8 6.5 3.5 13M8 6.5l4.5 6.5"/></svg>';
      cards.append(foreign(cx(p.x) - 15, p.y - 40, 30, 30, split));
    }
  }
  for (const n of data.nodes) showDropoff(n);
  apply();
}

// ---- sizes ----------------------------------------------------------------------------------

function showSize(audienceId) {
  const slot = viewport.querySelector(`[data-size="${audienceId}"]`);
  if (!slot) return;
  slot.replaceChildren(sizeNode(audienceId === "root" ? rootSize : sizes.get(audienceId)));
  slot.closest(".node")?.classList.add("sized");
  const { byId } = tree();
  for (const n of byId.values()) if (n.audience_id === audienceId || n.parent_id === nodeOfAudience(audienceId)?.id) showDropoff(n);
  if (audienceId === "root") for (const n of data.nodes) if (n.parent_id === null) showDropoff(n);
}

const nodeOfAudience = (aid) => data.nodes.find((n) => n.audience_id === aid);

function showDropoff(n) {
  const slot = viewport.querySelector(`[data-dropoff="${n.audience_id}"]`);
  if (!slot) return;
  let share = null;
  const own = sizeValue(sizes.get(n.audience_id));
  const parent = n.parent_id === null ? sizeValue(rootSize) : sizeValue(sizes.get(data.nodes.find((p) => p.id === n.parent_id)?.audience_id));
  if (own !== null && parent) share = own / parent;
  else if (shares.has(n.audience_id)) share = shares.get(n.audience_id);
  if (share === null || share === undefined) {
    slot.textContent = "";
    return;
  }
  const drop = Math.max(0, Math.min(100, Math.round((1 - share) * 100)));
  slot.textContent = `↓ ${drop}%`;
  slot.title = `${drop}% of the parent's users are not in this audience`;
}

const queue = [];
let active = 0;
let generation = 0;

/**
 * Sizes arrive after the page: the root's estimate and the journey's document (every audience's
 * size from one estimator pass) are asked for side by side; an audience still calculating is then
 * asked for on its own until it has its exact size. If the document fails, each audience is asked
 * for separately, so one failing estimate cannot hide the others.
 */
function fetchSizes() {
  generation += 1;
  queue.length = 0;
  queue.push({ kind: "root" }, { kind: "document" });
  pump();
}

function audienceJobs() {
  for (const n of orderedNodes()) queue.push({ kind: "audience", id: n.audience_id });
  pump();
}

function orderedNodes() {
  const { kids } = tree();
  const out = [];
  const walk = (key) => {
    for (const n of kids.get(key) ?? []) {
      out.push(n);
      walk(n.id);
    }
  };
  walk(0);
  return out;
}

function pump() {
  while (active < FETCHERS && queue.length) {
    const job = queue.shift();
    const gen = generation;
    active += 1;
    load(job)
      .catch((e) => {
        if (job.kind === "audience" && gen === generation) {
          sizes.set(job.id, { kind: "error", message: e.message });
          showSize(job.id);
        }
      })
      .finally(() => {
        active -= 1;
        pump();
      });
  }
}

async function load(job) {
  const gen = generation;
  if (job.kind === "root") {
    const est = await api("POST", "/api/v1/estimate", { journey_id: journeyId, position: 0, criteria: { all: [] } });
    if (gen !== generation) return;
    rootSize = est.size;
    showSize("root");
    return;
  }
  if (job.kind === "document") {
    let doc;
    try {
      doc = await api("GET", `/api/v1/journeys/${journeyId}`);
    } catch {
      if (gen === generation) audienceJobs();
      return;
    }
    if (gen !== generation) return;
    const walk = (list) => {
      for (const m of list) {
        received(m.audience.id, { ...m.audience, estimate: m.estimate }, gen);
        walk(m.children ?? []);
      }
    };
    walk(doc.milestones ?? []);
    return;
  }
  const a = await api("GET", `/api/v1/audiences/${job.id}`);
  if (gen !== generation) return;
  received(job.id, a, gen);
}

/** One audience's answer: its size, share of the parent and status, drawn at once. */
function received(audienceId, a, gen) {
  const job = { kind: "audience", id: audienceId };
  sizes.set(job.id, a.size);
  if (a.estimate?.parent_share != null) shares.set(job.id, a.estimate.parent_share);
  const n = nodeOfAudience(job.id);
  if (n) {
    n.calculating = false;
    if (n.status !== a.status) {
      n.status = a.status;
      const nodeEl = viewport.querySelector(`[data-node="${n.id}"]`);
      if (nodeEl) {
        nodeEl.className = nodeEl.className.replace(/status-\w+/, `status-${a.status}`);
        nodeEl.querySelector(".badge")?.remove();
        const b = badge(n);
        if (b) nodeEl.querySelector(".node-top").append(b);
      }
    }
  }
  showSize(job.id);
  if (a.size?.kind === "calculating") {
    setTimeout(() => {
      if (gen !== generation) return;
      queue.push(job);
      pump();
    }, POLL_MS);
  }
}

async function refresh() {
  const resp = await fetch(`/journeys/${journeyId}/canvas.json`, { credentials: "same-origin" });
  if (resp.status === 401) return (location.href = "/signin");
  data = await resp.json();
  draw();
  fetchSizes();
}

// ---- pan and zoom ---------------------------------------------------------------------------

function apply() {
  viewport.setAttribute("transform", `translate(${view.x},${view.y}) scale(${view.k})`);
}

function fit() {
  const { pos, root } = layout();
  let minX = root.x;
  let maxX = root.x + NODE_W;
  let maxY = ROOT_H + PLUS_H;
  for (const n of data.nodes) {
    const p = pos.get(n.id);
    minX = Math.min(minX, p.x);
    maxX = Math.max(maxX, p.x + NODE_W);
    maxY = Math.max(maxY, p.y + nodeHeight(n) + PLUS_H);
  }
  const w = canvas.clientWidth;
  const h = canvas.clientHeight;
  const pad = 32;
  view.k = Math.max(MIN_ZOOM, Math.min(1, (w - 2 * pad) / (maxX - minX), (h - 2 * pad - 40) / maxY));
  view.x = (w - (maxX - minX) * view.k) / 2 - minX * view.k;
  view.y = pad + 40;
  fitted = true;
  apply();
}

function zoomAt(factor, px, py) {
  const k = Math.max(MIN_ZOOM, Math.min(2.5, view.k * factor));
  view.x = px - ((px - view.x) * k) / view.k;
  view.y = py - ((py - view.y) * k) / view.k;
  view.k = k;
  apply();
}

canvas.addEventListener(
  "wheel",
  (ev) => {
    ev.preventDefault();
    const r = svg.getBoundingClientRect();
    zoomAt(Math.exp(-ev.deltaY * 0.0015), ev.clientX - r.left, ev.clientY - r.top);
  },
  { passive: false },
);

let drag = null;
svg.addEventListener("pointerdown", (ev) => {
  if (ev.target.closest(".node, button")) return;
  drag = { x: ev.clientX, y: ev.clientY, vx: view.x, vy: view.y };
  svg.setPointerCapture(ev.pointerId);
  canvas.classList.add("panning");
});
svg.addEventListener("pointermove", (ev) => {
  if (!drag) return;
  view.x = drag.vx + ev.clientX - drag.x;
  view.y = drag.vy + ev.clientY - drag.y;
  apply();
});
const endDrag = () => {
  drag = null;
  canvas.classList.remove("panning");
};
svg.addEventListener("pointerup", endDrag);
svg.addEventListener("pointercancel", endDrag);

for (const b of document.querySelectorAll("[data-zoom]")) {
  b.addEventListener("click", () => {
    if (b.dataset.zoom === "fit") return fit();
    zoomAt(b.dataset.zoom === "in" ? 1.25 : 0.8, canvas.clientWidth / 2, canvas.clientHeight / 2);
  });
}
window.addEventListener("resize", () => fitted && apply());

// ---- actions --------------------------------------------------------------------------------

const hasActivated = () => data.nodes.some((n) => n.status === "activated");

/** Run `change(dry)` as a dry run first when the journey has activated audiences, and confirm it. */
async function withDryRun(title, describe, change, { danger = false, confirm = "Save" } = {}) {
  if (!hasActivated()) {
    if (describe) {
      return dialog({ title, body: describe, confirm, danger, onSubmit: () => change(false) });
    }
    return change(false);
  }
  const report = await change(true);
  return dialog({
    title,
    wide: true,
    body: el(
      "div",
      {},
      describe,
      el("p", { class: "callout", text: "This journey has activated audiences. Projected changes once saved:" }),
      dryRunTable(report, data.journey.name),
    ),
    confirm,
    danger,
    onSubmit: () => change(false),
  });
}

const milestoneUrl = (parentId, position) => {
  const q = new URLSearchParams();
  if (parentId !== null && parentId !== undefined) q.set("parent_id", parentId);
  if (position !== null && position !== undefined) q.set("position", position);
  return `/journeys/${journeyId}/milestones/new?${q}`;
};

function siblingsOf(n) {
  return (tree().kids.get(n.parent_id ?? 0) ?? []).filter((s) => s.id !== undefined);
}

async function addRemaining(parentId) {
  const name = el("input", { name: "name", value: "Remaining users", maxlength: "200", required: true, "data-field": "split-name" });
  const body = el("div", {}, el("p", { class: "muted", text: "Everyone in the parent who matched none of the milestones beside it. Its criteria are derived and always last." }), el("label", { text: "Name" }), name);
  const done = await withDryRun(
    "Add a remaining users split",
    body,
    (dry) => api("POST", `/api/v1/journeys/${journeyId}/milestones${dry ? "?dry_run=true" : ""}`, { parent_id: parentId, name: name.value.trim() || "Remaining users", remaining: true }),
    { confirm: "Add split" },
  );
  if (done) {
    toast("Remaining users split added");
    await refresh();
  }
}

function splitMenu(anchor, n) {
  const siblings = siblingsOf(n);
  const hasRemaining = siblings.some((s) => s.remaining);
  const regular = siblings.filter((s) => !s.remaining);
  popover(anchor, [
    { id: "add-path", label: "Add a path", hint: "a milestone beside this one", run: () => (location.href = milestoneUrl(n.parent_id, regular.length)) },
    {
      id: "add-remaining",
      label: "Add remaining users split",
      hint: hasRemaining ? "this parent already has one" : "everyone else",
      disabled: hasRemaining,
      run: () => addRemaining(n.parent_id),
    },
  ]);
}

function plusMenu(anchor, n) {
  popover(anchor, [
    { id: "add-milestone", label: "Add milestone", hint: "narrow this audience further", run: () => (location.href = milestoneUrl(n.id, null)) },
    { id: "connect", label: "Connect output", hint: "send this audience to a partner", run: () => connect(n) },
  ]);
}

async function connect(n) {
  if (!data.outputs.length) {
    return dialog({ title: "No outputs yet", body: el("p", {}, "Create an output first on the ", el("a", { href: "/outputs", text: "Outputs" }), " page."), confirm: "OK" });
  }
  const select = el("select", { name: "output_id", "data-field": "output" }, data.outputs.map((o) => el("option", { value: o.id, text: `${o.name} (${o.type})` })));
  const body = el(
    "div",
    { class: "form" },
    el("p", { class: "muted" }, `Send ${n.name} (audience ${n.audience_id}) to a partner. An active connection activates the audience and uses one credit.`),
    el("label", { text: "Output" }),
    select,
    el("label", { text: "Status" }),
    el(
      "div",
      { class: "radios" },
      el("label", { class: "check" }, el("input", { type: "radio", name: "status", value: "active", checked: true }), "Active"),
      el("label", { class: "check" }, el("input", { type: "radio", name: "status", value: "inactive" }), "Inactive"),
    ),
    el("label", { text: "When deactivated" }),
    el("select", { name: "on_deactivate" }, el("option", { value: "keep", text: "Keep the partner's copy" }), el("option", { value: "remove_members", text: "Remove every member first" })),
    el("label", { text: "Settings (JSON, optional)" }),
    el("textarea", { name: "settings", class: "json small", rows: "3", placeholder: "{}", spellcheck: "false" }),
  );
  const done = await dialog({
    title: "Connect output",
    body,
    confirm: "Connect",
    onSubmit: async (v) => {
      let settings = {};
      if (v.settings.trim()) {
        try {
          settings = JSON.parse(v.settings);
        } catch {
          throw new Error("settings: not valid JSON");
        }
      }
      return api("POST", `/api/v1/audiences/${n.audience_id}/connections`, { output_id: Number(v.output_id), status: v.status, on_deactivate: v.on_deactivate, settings });
    },
  });
  if (done) {
    toast(done.status === "active" ? `${n.name} is connected and activated` : `${n.name} is connected (inactive)`);
    await refresh();
  }
}

const OUT_OF_SYNC = "While the connection is inactive the partner stops receiving changes, so its copy of the audience may go out of sync.";

function connectionMenu(anchor, n, c) {
  const items = [];
  if (c.status === "active") {
    items.push({
      id: "deactivate",
      label: "Deactivate",
      hint: "frees a credit if it is the last active connection",
      run: async () => {
        const done = await dialog({
          title: `Deactivate ${c.output}?`,
          body: el("div", {}, el("p", { class: "callout warn", "data-warning": "out-of-sync", text: OUT_OF_SYNC }), c.on_deactivate === "remove_members" ? el("p", { text: "This connection first sends removals for every current member." }) : null),
          confirm: "Deactivate",
          danger: true,
          onSubmit: () => api("PATCH", `/api/v1/connections/${c.id}`, { status: "inactive" }),
        });
        if (done) {
          toast(`${c.output} deactivated`);
          await refresh();
        }
      },
    });
  } else {
    items.push({
      id: "activate",
      label: "Activate",
      hint: "uses a credit",
      run: async () => {
        try {
          await api("PATCH", `/api/v1/connections/${c.id}`, { status: "active" });
          toast(`${c.output} activated`);
          await refresh();
        } catch (e) {
          toast(e.message, "error");
        }
      },
    });
  }
  if (c.health === "faulted")
    items.push({ id: "resume", label: "Resume delivery", run: async () => { await api("POST", `/api/v1/connections/${c.id}/resume`); toast("Delivery resumed"); await refresh(); } });
  items.push({ id: "status", label: "Delivery status", run: () => (location.href = `/outputs#connection-${c.id}`) });
  items.push({
    id: "delete-connection",
    label: "Delete connection",
    danger: true,
    run: async () => {
      const done = await dialog({
        title: `Delete the connection to ${c.output}?`,
        body: el("p", { class: "callout warn", text: `${OUT_OF_SYNC} ${c.on_deactivate === "remove_members" ? "Removals are sent for every member first." : ""}` }),
        confirm: "Delete connection",
        danger: true,
        onSubmit: () => api("DELETE", `/api/v1/connections/${c.id}`),
      });
      if (done) {
        toast("Connection deleted");
        await refresh();
      }
    },
  });
  popover(anchor, items);
}

async function move(n, delta) {
  const done = await withDryRun(
    `Move ${n.name}`,
    null,
    (dry) => api("PATCH", `/api/v1/milestones/${n.id}${dry ? "?dry_run=true" : ""}`, { position: n.position + delta }),
    { confirm: "Move" },
  );
  if (done) await refresh();
}

async function remove(n) {
  if (n.delete_block) {
    return dialog({ title: `${n.name} cannot be deleted yet`, body: el("p", { "data-delete-reason": "", text: n.delete_block }), confirm: "OK" });
  }
  const body = el("p", {}, "Delete ", el("strong", { text: n.name }), ` and its audience ${n.audience_id}${n.connections.length ? ", with its connections" : ""}? This cannot be undone.`);
  const done = await withDryRun(`Delete ${n.name}?`, body, (dry) => api("DELETE", `/api/v1/milestones/${n.id}${dry ? "?dry_run=true" : ""}`), { danger: true, confirm: "Delete milestone" });
  if (done) {
    toast(`Deleted ${n.name}`);
    await refresh();
  }
}

canvas.addEventListener("click", (ev) => {
  const target = ev.target.closest("[data-action]");
  if (!target || target.disabled) return;
  const action = target.dataset.action;
  const nodeEl = target.closest("[data-node]");
  const n = nodeEl ? data.nodes.find((x) => x.id === Number(nodeEl.dataset.node)) : data.nodes.find((x) => x.id === Number(target.dataset.for));
  const run = async () => {
    switch (action) {
      case "add-top":
        return (location.href = milestoneUrl(null, null));
      case "plus":
        return plusMenu(target, n);
      case "split":
        return splitMenu(target, n);
      case "edit":
        return (location.href = `/milestones/${n.id}/edit`);
      case "left":
        return move(n, -1);
      case "right":
        return move(n, 1);
      case "delete":
        return remove(n);
      case "connection":
        return connectionMenu(target, n, n.connections.find((c) => c.id === Number(target.dataset.connection)));
    }
  };
  run().catch((e) => toast(e.message, "error"));
});

draw();
fetchSizes();
