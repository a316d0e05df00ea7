// The milestone editor: name, the criteria builder (groups and every SPEC §4 leaf) and live estimates.
import { api, ApiError, dialog, dryRunTable, el, sizeNode, toast } from "./common.js";

const ed = JSON.parse(document.getElementById("editor-data").textContent);
const form = document.getElementById("milestone-form");
const builder = document.getElementById("builder");
const jsonBox = document.getElementById("criteria-json");
const panel = document.getElementById("estimate-panel");
let vocab = { events: [], event_attributes: [], user_attributes: [], identities: [], predictions: [], consent_purposes: [], audiences: [], calculated_attributes: [] };

const wrapTop = (c) => (c && (Array.isArray(c.all) || Array.isArray(c.any)) ? c : { all: c ? [c] : [] });
let criteria = wrapTop(ed.criteria);
form.elements.name.value = ed.name ?? "";

// ---- vocabulary of the SPEC -----------------------------------------------------------------

const LEAF_TYPES = {
  event: "Event",
  sequence: "Sequence of events",
  user_attribute: "User attribute",
  calculated_attribute: "Calculated attribute",
  prediction: "Prediction",
  identity: "Identity",
  consent: "Consent",
  device: "Device",
  first_seen: "First seen",
  last_seen: "Last seen",
  audience: "Audience membership",
  parent_entry: "Time since entering the parent",
};
const EVENT_TYPES = ["custom_event", "commerce_event", "screen_view", "session_start", "session_end", "install", "upgrade", "uninstall", "crash_report", "push_registration", "push_message", "opt_out", "first_run", "application_state_transition", "breadcrumb", "network_performance", "user_attribute_change", "user_identity_change", "profile"];
const CUSTOM_TYPES = ["", "navigation", "location", "search", "transaction", "user_content", "user_preference", "social", "media", "attribution", "other", "unknown"];
const ACTIONS = ["", "purchase", "add_to_cart", "remove_from_cart", "checkout", "checkout_option", "click", "view_detail", "refund", "add_to_wishlist", "remove_from_wishlist"];
const OPS = {
  presence: ["exists", "not_exists", "empty"],
  string: ["equals", "not_equals", "contains", "not_contains", "starts_with", "ends_with", "pattern", "matches", "in", "not_in"],
  number: ["greater_than", "greater_or_equal", "less_than", "less_or_equal", "between"],
  date: ["before", "after", "on_date", "between_dates", "within_last", "more_than_ago"],
  list: ["includes", "not_includes", "partial_match"],
};
const ALL_OPS = [...OPS.presence, ...OPS.string, ...OPS.number, ...OPS.date, ...OPS.list];
const NUMBER_OPS = ["equals", "not_equals", "greater_than", "greater_or_equal", "less_than", "less_or_equal", "between", "in", "not_in"];
const DATE_OPS = [...OPS.date, "exists", "not_exists"];
const UNITS = ["minutes", "hours", "days", "weeks"];
const DEVICE_FIELDS = ["platform", "os_version", "device_model", "device_manufacturer", "network_carrier", "app_version"];
const FNS = ["count", "sum", "min", "max", "avg", "distinct"];
const OP_LABEL = (op) => op.replaceAll("_", " ");

const DEFAULTS = {
  event: () => ({ type: "event", event: { event_type: "custom_event" }, window: { last: { amount: 30, unit: "days" } } }),
  sequence: () => ({ type: "sequence", first: { event_type: "custom_event" }, then: { event_type: "commerce_event", action: "purchase" }, within: { amount: 1, unit: "days" }, completed: true }),
  user_attribute: () => ({ type: "user_attribute", attribute: "", op: "exists" }),
  calculated_attribute: () => ({ type: "calculated_attribute", name: vocab.calculated_attributes[0] ?? "", op: "greater_than", value: 0 }),
  prediction: () => ({ type: "prediction", prediction: vocab.predictions[0] ?? "churn", measure: "score", op: "greater_than", value: 0.5 }),
  identity: () => ({ type: "identity", identity: "email", op: "exists" }),
  consent: () => ({ type: "consent", regulation: "gdpr", purpose: vocab.consent_purposes[0]?.purpose ?? "", state: "consented" }),
  device: () => ({ type: "device", field: "platform", op: "equals", value: "ios" }),
  first_seen: () => ({ type: "first_seen", op: "within_last", value: { amount: 30, unit: "days" } }),
  last_seen: () => ({ type: "last_seen", op: "within_last", value: { amount: 7, unit: "days" } }),
  audience: () => ({ type: "audience", audience_id: vocab.audiences.find((a) => a.id !== ed.audience_id)?.id ?? 1, member: true }),
  parent_entry: () => ({ type: "parent_entry", op: "more_than_ago", value: { amount: 2, unit: "days" } }),
};

// ---- small inputs bound to the criteria object -----------------------------------------------

const scalar = (text) => {
  const t = text.trim();
  if (/^-?\d+(\.\d+)?$/.test(t)) return Number(t);
  if (t === "true" || t === "false") return t === "true";
  return text;
};

function select(options, value, onchange, attrs = {}) {
  const s = el("select", attrs, options.map((o) => (Array.isArray(o) ? el("option", { value: o[0], text: o[1] }) : el("option", { value: o, text: o === "" ? "any" : OP_LABEL(o) }))));
  s.value = value ?? "";
  s.addEventListener("change", () => onchange(s.value));
  return s;
}

function text(value, onchange, attrs = {}) {
  const i = el("input", { type: "text", value: value ?? "", ...attrs });
  i.addEventListener("input", () => onchange(i.value));
  return i;
}

const field = (label, ...inputs) => el("label", { class: "fld" }, el("span", { class: "fld-label", text: label }), ...inputs);

function duration(obj, key, path, onchange = changed) {
  const d = obj[key] ?? { amount: 1, unit: "days" };
  obj[key] = d;
  return el(
    "span",
    { class: "duration" },
    text(String(d.amount), (v) => { d.amount = Number(v); onchange(); }, { class: "num-in", inputmode: "numeric", "data-path": `${path}.amount` }),
    select(UNITS, d.unit, (v) => { d.unit = v; onchange(); }, { "data-path": `${path}.unit` }),
  );
}

/** The value part of a condition, by operator: nothing, a list, min/max, a duration or one value. */
function valueInputs(obj, path, list) {
  const op = obj.op;
  const clear = (...keep) => { for (const k of ["value", "values", "min", "max"]) if (!keep.includes(k)) delete obj[k]; };
  if (OPS.presence.includes(op) && op !== "empty") { clear(); return []; }
  if (op === "empty") { clear(); return []; }
  if (["in", "not_in", "between_dates"].includes(op)) {
    clear("values");
    obj.values ??= [];
    return [text(obj.values.join(", "), (v) => { obj.values = v.split(",").map((s) => (op === "between_dates" ? s.trim() : scalar(s.trim()))).filter((s) => s !== ""); changed(); }, { placeholder: op === "between_dates" ? "2026-01-01, 2026-01-31" : "a, b, c", "data-path": `${path}.values` })];
  }
  if (op === "between") {
    clear("min", "max");
    return [
      text(obj.min ?? "", (v) => { obj.min = scalar(v); changed(); }, { class: "num-in", placeholder: "min", "data-path": `${path}.min` }),
      el("span", { class: "muted", text: "and" }),
      text(obj.max ?? "", (v) => { obj.max = scalar(v); changed(); }, { class: "num-in", placeholder: "max", "data-path": `${path}.max` }),
    ];
  }
  if (op === "within_last" || op === "more_than_ago") {
    clear("value");
    if (typeof obj.value !== "object" || obj.value === null) obj.value = { amount: 7, unit: "days" };
    return [duration(obj, "value", `${path}.value`)];
  }
  clear("value");
  if (typeof obj.value === "object" && obj.value !== null) obj.value = "";
  obj.value ??= "";
  const isDate = OPS.date.includes(op);
  return [text(String(obj.value), (v) => { obj.value = isDate ? v : scalar(v); changed(); }, { placeholder: isDate ? "YYYY-MM-DD" : "value", list, "data-path": `${path}.value` })];
}

function conditionRow(obj, path, { attrList, ops = ALL_OPS, attrKey = "attribute", onOp }) {
  const row = el("span", { class: "cond" });
  const redraw = () => row.replaceChildren(...parts());
  const parts = () => [
    attrKey ? text(obj[attrKey] ?? "", (v) => { obj[attrKey] = v; changed(); }, { placeholder: "attribute", list: attrList, "data-path": `${path}.${attrKey}`, class: "attr-in" }) : null,
    select(ops, obj.op, (v) => { obj.op = v; onOp?.(v); redraw(); changed(); }, { "data-path": `${path}.op` }),
    ...valueInputs(obj, path, attrKey === "attribute" ? null : undefined),
  ].filter(Boolean);
  redraw();
  return row;
}

function selector(sel, path, label) {
  const box = el("span", { class: "selector" });
  const redraw = () => box.replaceChildren(...parts());
  const parts = () => {
    const out = [
      select(EVENT_TYPES, sel.event_type, (v) => { sel.event_type = v; delete sel.name; delete sel.custom_event_type; delete sel.action; redraw(); changed(); }, { "data-path": `${path}.event_type`, "aria-label": `${label} event type` }),
    ];
    if (["custom_event", "screen_view"].includes(sel.event_type)) {
      out.push(text(sel.name ?? "", (v) => { if (v.trim()) sel.name = v; else delete sel.name; changed(); }, { placeholder: "any name", list: sel.event_type === "screen_view" ? "dl-screens" : "dl-events", "data-path": `${path}.name`, "aria-label": `${label} event name`, class: "name-in" }));
    }
    if (sel.event_type === "custom_event") {
      out.push(select(CUSTOM_TYPES, sel.custom_event_type ?? "", (v) => { if (v) sel.custom_event_type = v; else delete sel.custom_event_type; changed(); }, { "data-path": `${path}.custom_event_type`, title: "custom event type" }));
    }
    if (sel.event_type === "commerce_event") {
      out.push(select(ACTIONS, sel.action ?? "", (v) => { if (v) sel.action = v; else delete sel.action; changed(); }, { "data-path": `${path}.action`, title: "product action" }));
    }
    return out;
  };
  redraw();
  return box;
}

function windowPicker(leaf, path) {
  const kind = () => (!leaf.window ? "" : leaf.window.last ? "last" : leaf.window.since_parent_entry ? "since_parent_entry" : leaf.window.since ? "since" : leaf.window.between_ago ? "between_ago" : "other");
  const box = el("span", { class: "window" });
  const redraw = () => {
    const k = kind();
    const parts = [
      select([["", "within the lookback"], ["last", "in the last"], ["between_ago", "between … ago"], ["since", "since date"], ["since_parent_entry", "since entering the parent"], ...(k === "other" ? [["other", "(custom window)"]] : [])], k, (v) => {
        if (v === "") delete leaf.window;
        else if (v === "last") leaf.window = { last: { amount: 30, unit: "days" } };
        else if (v === "between_ago") leaf.window = { between_ago: { from: 7, to: 14, unit: "days" } };
        else if (v === "since") leaf.window = { since: new Date(Date.now() - 30 * 864e5).toISOString().slice(0, 10) };
        else if (v === "since_parent_entry") leaf.window = { since_parent_entry: true };
        redraw();
        changed();
      }, { "data-path": `${path}.window` }),
    ];
    if (k === "last") parts.push(duration(leaf.window, "last", `${path}.window.last`));
    if (k === "since") parts.push(text(leaf.window.since, (v) => { leaf.window.since = v; changed(); }, { class: "date-in", "data-path": `${path}.window.since` }));
    if (k === "between_ago") {
      const b = leaf.window.between_ago;
      parts.push(
        text(String(b.from), (v) => { b.from = Number(v); changed(); }, { class: "num-in", "data-path": `${path}.window.between_ago.from` }),
        el("span", { class: "muted", text: "and" }),
        text(String(b.to), (v) => { b.to = Number(v); changed(); }, { class: "num-in", "data-path": `${path}.window.between_ago.to` }),
        select(UNITS, b.unit, (v) => { b.unit = v; changed(); }),
        el("span", { class: "muted", text: "ago" }),
      );
    }
    box.replaceChildren(...parts);
  };
  redraw();
  return box;
}

// ---- leaves ---------------------------------------------------------------------------------

function leafBody(leaf, path) {
  switch (leaf.type) {
    case "event": {
      leaf.having ??= { fn: "count", op: "greater_than", value: 0 };
      const h = leaf.having;
      const where = el("div", { class: "where" });
      leaf.where ??= [];
      const drawWhere = () =>
        where.replaceChildren(
          ...leaf.where.map((c, i) =>
            el("div", { class: "where-row" }, el("span", { class: "muted", text: i ? "and" : "where" }), conditionRow(c, `${path}.where[${i}]`, { attrList: "dl-event-attrs" }), el("button", { type: "button", class: "icon", title: "Remove condition", onclick: () => { leaf.where.splice(i, 1); if (!leaf.where.length) delete leaf.where; drawWhere(); changed(); } }, "×")),
          ),
          el("button", { type: "button", class: "link small", onclick: () => { (leaf.where ??= []).push({ attribute: "", op: "equals", value: "" }); drawWhere(); changed(); } }, "+ where"),
        );
      drawWhere();
      const having = el("span", { class: "having" });
      const drawHaving = () =>
        having.replaceChildren(
          ...[select(FNS, h.fn, (v) => { h.fn = v; if (v === "count") delete h.attribute; else h.attribute ??= ""; drawHaving(); changed(); }, { "data-path": `${path}.having.fn` }),
          h.fn !== "count" ? text(h.attribute ?? "", (v) => { h.attribute = v; changed(); }, { placeholder: "attribute", list: "dl-event-attrs", "data-path": `${path}.having.attribute`, class: "attr-in" }) : null,
          conditionRow(h, `${path}.having`, { attrKey: null, ops: NUMBER_OPS })].filter(Boolean),
        );
      drawHaving();
      return [el("div", { class: "line" }, selector(leaf.event, `${path}.event`, "Event"), windowPicker(leaf, path)), el("div", { class: "line" }, el("span", { class: "muted", text: "having" }), having), where];
    }
    case "sequence":
      return [
        el("div", { class: "line" }, el("span", { class: "muted", text: "first" }), selector(leaf.first, `${path}.first`, "First")),
        el("div", { class: "line" }, el("span", { class: "muted", text: "then" }), selector(leaf.then, `${path}.then`, "Then")),
        el(
          "div",
          { class: "line" },
          select([["true", "completed within"], ["false", "not completed within"]], String(leaf.completed !== false), (v) => { leaf.completed = v === "true"; changed(); }, { "data-path": `${path}.completed` }),
          duration(leaf, "within", `${path}.within`),
          windowPicker(leaf, path),
        ),
      ];
    case "user_attribute":
      return [conditionRow(leaf, path, { attrList: "dl-user-attrs" })];
    case "calculated_attribute":
      return [conditionRow(leaf, path, { attrList: "dl-calc", attrKey: "name" })];
    case "prediction":
      return [
        el(
          "div",
          { class: "line" },
          text(leaf.prediction, (v) => { leaf.prediction = v; changed(); }, { list: "dl-predictions", placeholder: "prediction", "data-path": `${path}.prediction`, class: "attr-in" }),
          select(["score", "percentile"], leaf.measure, (v) => { leaf.measure = v; changed(); }, { "data-path": `${path}.measure` }),
          conditionRow(leaf, path, { attrKey: null, ops: NUMBER_OPS }),
        ),
      ];
    case "identity":
      return [conditionRow(leaf, path, { attrList: "dl-identities", attrKey: "identity", ops: [...OPS.presence, ...OPS.string] })];
    case "consent":
      return [
        el(
          "div",
          { class: "line" },
          select(["gdpr", "ccpa"], leaf.regulation, (v) => { leaf.regulation = v; changed(); }, { "data-path": `${path}.regulation` }),
          text(leaf.purpose, (v) => { leaf.purpose = v; changed(); }, { list: "dl-purposes", placeholder: "purpose", "data-path": `${path}.purpose`, class: "attr-in" }),
          select(["consented", "not_consented", "present", "not_present"], leaf.state, (v) => { leaf.state = v; changed(); }, { "data-path": `${path}.state` }),
        ),
      ];
    case "device":
      return [
        el(
          "div",
          { class: "line" },
          select(DEVICE_FIELDS, leaf.field, (v) => { leaf.field = v; changed(); }, { "data-path": `${path}.field` }),
          conditionRow(leaf, path, { attrKey: null, ops: [...OPS.presence, ...OPS.string, ...OPS.number] }),
        ),
      ];
    case "first_seen":
    case "last_seen":
      return [conditionRow(leaf, path, { attrKey: null, ops: DATE_OPS })];
    case "audience":
      return [
        el(
          "div",
          { class: "line" },
          select([["true", "is a member of"], ["false", "is not a member of"]], String(leaf.member !== false), (v) => { leaf.member = v === "true"; changed(); }, { "data-path": `${path}.member` }),
          select(vocab.audiences.filter((a) => a.id !== ed.audience_id).map((a) => [String(a.id), `${a.journey} › ${a.milestone} (#${a.id})`]), String(leaf.audience_id ?? ""), (v) => { leaf.audience_id = Number(v); changed(); }, { "data-path": `${path}.audience_id`, class: "wide-select" }),
        ),
      ];
    case "parent_entry":
      return [
        el(
          "div",
          { class: "line" },
          el("span", { class: "muted", text: "entered the parent" }),
          select(["within_last", "more_than_ago"], leaf.op, (v) => { leaf.op = v; changed(); }, { "data-path": `${path}.op` }),
          duration(leaf, "value", `${path}.value`),
        ),
      ];
    default:
      return [el("code", { text: JSON.stringify(leaf) })];
  }
}

// ---- groups and the tree --------------------------------------------------------------------

const isGroup = (c) => c && (Array.isArray(c.all) || Array.isArray(c.any) || "not" in c);
const groupKind = (c) => (Array.isArray(c.all) ? "all" : Array.isArray(c.any) ? "any" : "not");

/** Replace `node` in its container (parent array or wrapper) and redraw. */
function node(c, path, replace, remove, topIndex) {
  const estimateSlot = topIndex !== undefined ? el("span", { class: "crit-estimate", "data-criterion-estimate": topIndex }) : null;
  const head = (label, extra) =>
    el("div", { class: "crit-head" }, label, ...extra, el("span", { class: "spacer" }), estimateSlot, remove ? el("button", { type: "button", class: "icon", title: "Remove", "data-remove": path, onclick: remove }, "×") : null);
  if (isGroup(c)) {
    const kind = groupKind(c);
    const children = kind === "not" ? [c.not] : c[kind];
    const box = el("div", { class: `group group-${kind}`, "data-path": path });
    const kindSel = select([["all", "All of"], ["any", "Any of"], ["not", "None of"]], kind, (v) => {
      let next;
      if (v === "not") next = { not: children.length === 1 ? children[0] : { all: children } };
      else if (kind === "not") next = { [v]: isGroup(c.not) && !("not" in c.not) ? c.not[groupKind(c.not)] : [c.not] };
      else next = { [v]: children };
      replace(next);
    }, { "data-group-kind": path });
    box.append(head(kindSel, []));
    const list = el("div", { class: "group-children" });
    if (kind === "not") {
      list.append(node(c.not, `${path}.not`, (n) => { c.not = n; redraw(); }, null));
    } else {
      c[kind].forEach((child, i) =>
        list.append(node(child, `${path}${path ? "." : ""}${kind}[${i}]`, (n) => { c[kind][i] = n; redraw(); }, () => { c[kind].splice(i, 1); redraw(); }, path === "" ? i : undefined)),
      );
      if (!c[kind].length) list.append(el("p", { class: "muted small", text: kind === "all" ? "No criteria: everyone in the parent." : "No criteria: nobody." }));
      list.append(
        el(
          "div",
          { class: "add-row" },
          select([["", "+ Add criterion…"], ...Object.entries(LEAF_TYPES)], "", (v) => { if (v) { c[kind].push(DEFAULTS[v]()); redraw(); } }, { "data-add-criterion": path || "top" }),
          el("button", { type: "button", class: "link small", "data-add-group": path || "top", onclick: () => { c[kind].push({ any: [] }); redraw(); } }, "+ Add group"),
        ),
      );
    }
    box.append(list);
    return box;
  }
  const box = el("div", { class: "leaf", "data-path": path, "data-leaf": c.type });
  box.append(
    head(
      select(Object.entries(LEAF_TYPES), c.type, (v) => replace(DEFAULTS[v]()), { "data-leaf-type": path, class: "type-sel" }),
      [],
    ),
    el("div", { class: "leaf-body" }, ...leafBody(c, path)),
  );
  return box;
}

function redraw() {
  const top = node(criteria, "", (n) => { criteria = wrapTop(n); redraw(); }, null);
  top.classList.add("top-group");
  builder.replaceChildren(top);
  changed();
}

// ---- live estimates -------------------------------------------------------------------------

let timer = null;
let seq = 0;

function changed() {
  jsonBox.value = JSON.stringify(criteria, null, 2);
  clearErrors();
  clearTimeout(timer);
  timer = setTimeout(estimate, 300);
  panel.classList.add("updating");
}

async function estimate() {
  if (ed.remaining) return;
  const mine = ++seq;
  const body = { journey_id: ed.journey_id, criteria };
  if (ed.parent_id !== null) body.parent_id = ed.parent_id;
  if (ed.position !== null && ed.position !== undefined) body.position = ed.position;
  try {
    const est = await api("POST", "/api/v1/estimate", body);
    if (mine !== seq) return; // a newer edit is on its way
    showEstimate(est);
  } catch (e) {
    if (mine !== seq) return;
    panel.classList.remove("updating");
    if (e instanceof ApiError && e.status === 400) showError(e.message);
    else toast(e.message, "error");
  }
}

function showEstimate(est) {
  panel.classList.remove("updating");
  panel.querySelector('[data-estimate="total"]').replaceChildren(sizeNode(est.size));
  const share = est.parent_share;
  panel.querySelector('[data-estimate="share"]').textContent = share == null ? "" : `${Math.round(share * 100)}% of the users who reach this step (↓ ${Math.round((1 - share) * 100)}%)`;
  const rows = est.criteria ?? [];
  const top = criteria.all ?? criteria.any ?? [];
  panel.querySelector('[data-estimate="rows"]').replaceChildren(
    ...rows.map((r, i) => el("li", { "data-criterion-row": i }, el("span", { class: "crit-label", text: describe(top[i] ?? r.criterion) }), sizeNode(r.size))),
  );
  for (const slot of builder.querySelectorAll("[data-criterion-estimate]")) {
    const r = rows[Number(slot.dataset.criterionEstimate)];
    slot.replaceChildren(r ? sizeNode(r.size) : "");
  }
}

function describe(c) {
  if (!c) return "";
  if (isGroup(c)) return { all: "All of …", any: "Any of …", not: "None of …" }[groupKind(c)];
  const s = (sel) => [sel.name ?? sel.event_type.replaceAll("_", " "), sel.action].filter(Boolean).join(" ");
  const val = (o) => {
    if (o.values) return o.values.join(", ");
    if (o.min !== undefined) return `${o.min}–${o.max}`;
    if (o.value && typeof o.value === "object") return `${o.value.amount} ${o.value.unit}`;
    return o.value ?? "";
  };
  const cond = (subject, o) => `${subject} ${OP_LABEL(o.op)} ${val(o)}`.trim();
  switch (c.type) {
    case "event": {
      const h = c.having ?? { fn: "count", op: "greater_than", value: 0 };
      return h.fn === "count" && h.op === "greater_than" && h.value === 0 ? s(c.event) : cond(`${s(c.event)} ${h.fn}`, h);
    }
    case "sequence": return `${s(c.first)} → ${s(c.then)}`;
    case "user_attribute": return cond(c.attribute || "attribute", c);
    case "calculated_attribute": return cond(c.name, c);
    case "prediction": return cond(`${c.prediction} ${c.measure}`, c);
    case "identity": return cond(c.identity, c);
    case "device": return cond(c.field.replaceAll("_", " "), c);
    case "first_seen":
    case "last_seen": return cond(c.type.replace("_", " "), c);
    case "consent": return `${c.regulation} ${c.purpose} ${c.state.replaceAll("_", " ")}`;
    case "audience": return `${c.member === false ? "Not in" : "In"} audience ${c.audience_id}`;
    case "parent_entry": return cond("entered parent", c);
    default: return LEAF_TYPES[c.type] ?? c.type;
  }
}

// ---- errors on their field ------------------------------------------------------------------

function clearErrors() {
  for (const p of form.querySelectorAll(".field-error")) p.textContent = "";
  for (const i of form.querySelectorAll("[aria-invalid]")) i.removeAttribute("aria-invalid");
  for (const b of form.querySelectorAll(".has-error")) b.classList.remove("has-error");
  for (const m of form.querySelectorAll(".inline-error")) m.remove();
}

/** Put an API message ("criteria: all[0].op: …") on the input or criterion it names. */
function showError(message) {
  const m = /^(?:criteria[.:]\s*)?((?:all|any|not)[\w.[\]]*)\s*:\s*(.*)$/s.exec(message);
  if (/^name\b/.test(message)) {
    form.elements.name.setAttribute("aria-invalid", "true");
    form.querySelector('[data-error-for="name"]').textContent = message;
    return;
  }
  if (!m) {
    form.querySelector('[data-error-for="criteria"]').textContent = message;
    return;
  }
  const path = m[1];
  let target = null;
  let best = -1;
  for (const elx of builder.querySelectorAll("[data-path]")) {
    const p = elx.dataset.path;
    if ((path === p || path.startsWith(`${p}.`) || path.startsWith(`${p}[`)) && p.length > best) {
      target = elx;
      best = p.length;
    }
  }
  if (!target) {
    form.querySelector('[data-error-for="criteria"]').textContent = message;
    return;
  }
  target.setAttribute("aria-invalid", "true");
  const box = target.closest(".leaf, .group") ?? target;
  box.classList.add("has-error");
  box.append(el("p", { class: "field-error inline-error", "data-error-path": path, text: m[2] }));
}

// ---- saving ---------------------------------------------------------------------------------

form.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  clearErrors();
  const name = form.elements.name.value.trim();
  if (!name) {
    form.elements.name.setAttribute("aria-invalid", "true");
    form.querySelector('[data-error-for="name"]').textContent = "Give the milestone a name.";
    return;
  }
  const body = ed.remaining ? { name } : { name, criteria };
  const send = (dry) => {
    const q = dry ? "?dry_run=true" : "";
    if (ed.milestone_id) return api("PATCH", `/api/v1/milestones/${ed.milestone_id}${q}`, body);
    const create = { ...body, parent_id: ed.parent_id };
    if (ed.position !== null && ed.position !== undefined) create.position = ed.position;
    return api("POST", `/api/v1/journeys/${ed.journey_id}/milestones${q}`, create);
  };
  try {
    if (ed.activated_path && !ed.remaining) {
      const report = await send(true);
      const done = await dialog({
        title: "Save a change to a live journey?",
        wide: true,
        body: el("div", {}, el("p", { class: "callout", text: "This journey has activated audiences. Saving moves users between paths; projected changes:" }), dryRunTable(report, report.journey ?? document.querySelector(".crumbs a:nth-of-type(2)")?.textContent)),
        confirm: "Save",
        onSubmit: () => send(false),
      });
      if (!done) return;
    } else {
      await send(false);
    }
    location.href = `/journeys/${ed.journey_id}`;
  } catch (e) {
    if (e instanceof ApiError && e.status < 500) showError(e.message);
    else toast(e.message, "error");
  }
});

document.getElementById("toggle-json").addEventListener("click", () => {
  const showing = !jsonBox.hidden;
  if (showing) {
    try {
      criteria = wrapTop(JSON.parse(jsonBox.value));
    } catch {
      form.querySelector('[data-error-for="criteria"]').textContent = "criteria: not valid JSON";
      return;
    }
  }
  jsonBox.hidden = showing;
  builder.hidden = !showing;
  if (showing) redraw();
});
jsonBox.addEventListener("input", () => {
  try {
    criteria = wrapTop(JSON.parse(jsonBox.value));
    clearTimeout(timer);
    timer = setTimeout(estimate, 300);
  } catch {
    /* finishing typing */
  }
});

// ---- pickers --------------------------------------------------------------------------------

function datalist(id, values) {
  document.getElementById(id)?.remove();
  document.body.append(el("datalist", { id }, [...new Set(values)].filter(Boolean).map((v) => el("option", { value: v }))));
}

async function loadVocabulary() {
  try {
    vocab = await api("GET", `/api/v1/journeys/${ed.journey_id}/vocabulary`);
  } catch (e) {
    toast(`Pickers unavailable: ${e.message}`, "error");
    return;
  }
  datalist("dl-events", vocab.events.filter((e) => e.event_type === "custom_event").map((e) => e.name));
  datalist("dl-screens", vocab.events.filter((e) => e.event_type === "screen_view").map((e) => e.name));
  datalist("dl-event-attrs", ["total_amount", "transaction_id", "currency_code", "coupon_code", ...vocab.event_attributes]);
  datalist("dl-user-attrs", vocab.user_attributes);
  datalist("dl-identities", ["email", "customer_id", "mobile_number", "other", ...vocab.identities]);
  datalist("dl-predictions", vocab.predictions);
  datalist("dl-purposes", vocab.consent_purposes.map((p) => p.purpose));
  datalist("dl-calc", vocab.calculated_attributes);
  if (builder.querySelector('[data-leaf="audience"]')) redraw();
}

if (ed.remaining) {
  builder.replaceChildren(el("p", { class: "callout" }, "A remaining users split has derived criteria: everyone in the parent who matched none of its siblings. Only its name can change."));
  document.getElementById("toggle-json").hidden = true;
  panel.hidden = true;
} else {
  redraw();
}
loadVocabulary();

