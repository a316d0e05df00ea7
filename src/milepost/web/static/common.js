// Shared helpers: API calls with the session's CSRF token, number and size formatting, dialogs.

const csrf = () => document.querySelector('meta[name="csrf-token"]')?.content ?? "";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export async function api(method, path, body) {
  const init = { method, headers: { "X-CSRF-Token": csrf() }, credentials: "same-origin" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(path, init);
  if (resp.status === 401) {
    location.href = `/signin?next=${encodeURIComponent(location.pathname)}`;
    throw new ApiError(401, "UNAUTHORIZED", "signed out");
  }
  const text = await resp.text();
  const data = text ? JSON.parse(text) : null;
  if (!resp.ok) {
    const err = data?.error ?? {};
    throw new ApiError(resp.status, err.code ?? "ERROR", err.message ?? `${resp.status} ${resp.statusText}`);
  }
  return data;
}

const nf = new Intl.NumberFormat("en-US");
export const fmt = (n) => nf.format(n);

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

const WARNING_SVG =
  '<svg class="warn-icon" viewBox="0 0 24 24" aria-hidden="true"><path d="M12 2 1 21h22L12 2z"/><path class="mark" d="M11 9h2v6h-2zm0 8h2v2h-2z"/></svg>';

/** A size object of SPEC §5 as DOM: its text, and its explanation as a tooltip. */
export function sizeNode(size) {
  const span = el("span", { class: `size size-${size?.kind ?? "none"}`, "data-size-kind": size?.kind ?? "" });
  if (!size) {
    span.textContent = "…";
    return span;
  }
  switch (size.kind) {
    case "estimate":
      if (size.exact) {
        span.textContent = fmt(size.value);
        span.title = "Exact: the sample is the whole population";
      } else {
        span.textContent = `≈ ${fmt(size.value)}`;
        span.title = `95% interval: ${fmt(size.low)} – ${fmt(size.high)}`;
      }
      break;
    case "too_small":
      span.textContent = "~";
      span.title = `Too few sampled users to estimate: fewer than ${fmt(size.upper_bound)}`;
      break;
    case "error":
      span.innerHTML = WARNING_SVG;
      span.append(el("span", { class: "error-text", text: size.message ?? "cannot estimate" }));
      span.title = size.message ?? "cannot estimate";
      break;
    case "calculating":
      span.append(el("span", { class: "spinner", "aria-hidden": "true" }), "Calculating");
      span.title = "First full calculation running; the exact size follows";
      break;
    case "actual":
      span.textContent = fmt(size.value);
      span.title = "Exact current membership";
      break;
    default:
      span.textContent = "…";
  }
  if (size.warning) {
    const w = el("span", { class: "size-warning", title: size.warning });
    w.innerHTML = WARNING_SVG;
    span.append(w);
  }
  return span;
}

export const sizeValue = (size) =>
  size && (size.kind === "estimate" || size.kind === "actual") ? size.value : null;

export function toast(message, kind = "info") {
  const t = document.getElementById("toast");
  if (!t) return;
  t.textContent = message;
  t.className = `show ${kind}`;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (t.className = ""), 4000);
}

/**
 * A modal dialog. `onSubmit(values)` runs on confirm; if it throws, its message is shown in the
 * dialog, which stays open. Resolves to onSubmit's result, or null when cancelled.
 */
export function dialog({ title, body, confirm = "Confirm", danger = false, wide = false, onSubmit = async (v) => v }) {
  const dlg = document.getElementById("dialog");
  const form = document.getElementById("dialog-form");
  const error = el("p", { class: "field-error", "data-error-for": "dialog", role: "alert" });
  const ok = el("button", { class: `btn ${danger ? "danger" : "primary"}`, type: "submit", "data-confirm": "" }, confirm);
  const cancel = el("button", { class: "btn ghost", type: "button", "data-cancel": "" }, "Cancel");
  form.replaceChildren(
    el("h2", { text: title }),
    el("div", { class: "dialog-body" }, body),
    error,
    el("div", { class: "form-actions" }, cancel, ok),
  );
  dlg.classList.toggle("wide", wide);
  return new Promise((resolve) => {
    let result = null;
    const finish = () => {
      dlg.removeEventListener("close", finish);
      form.onsubmit = null;
      resolve(result);
    };
    form.onsubmit = async (ev) => {
      ev.preventDefault();
      error.textContent = "";
      ok.disabled = true;
      try {
        result = (await onSubmit(Object.fromEntries(new FormData(form)))) ?? true;
        dlg.close();
      } catch (e) {
        error.textContent = e.message;
      } finally {
        ok.disabled = false;
      }
    };
    cancel.onclick = () => dlg.close();
    dlg.addEventListener("close", finish);
    dlg.showModal();
    (form.querySelector(".dialog-body input, .dialog-body select, .dialog-body textarea") ?? ok).focus();
  });
}

/** A small menu of actions at the clicked element; closes on the next click elsewhere. */
export function popover(anchor, items) {
  document.querySelector(".popover")?.remove();
  const menu = el(
    "div",
    { class: "popover", role: "menu" },
    items.map((it) =>
      el(
        "button",
        {
          type: "button",
          role: "menuitem",
          class: it.danger ? "danger" : "",
          disabled: it.disabled,
          title: it.title,
          "data-menu": it.id,
          onclick: () => {
            menu.remove();
            it.run();
          },
        },
        it.label,
        it.hint ? el("span", { class: "hint", text: it.hint }) : null,
      ),
    ),
  );
  document.body.append(menu);
  const r = anchor.getBoundingClientRect();
  menu.style.left = `${Math.min(r.left + window.scrollX, window.innerWidth - menu.offsetWidth - 8)}px`;
  menu.style.top = `${r.bottom + window.scrollY + 6}px`;
  setTimeout(() => {
    const close = (ev) => {
      if (ev.type === "keydown" ? ev.key === "Escape" : !menu.contains(ev.target)) {
        menu.remove();
        document.removeEventListener("pointerdown", close, true);
        document.removeEventListener("keydown", close, true);
      }
    };
    document.addEventListener("pointerdown", close, true);
    document.addEventListener("keydown", close, true);
  });
  menu.querySelector("button:not([disabled])")?.focus();
  return menu;
}

/** The dry run's answer (SPEC §2): projected enters and leaves per activated audience it touches. */
export function dryRunTable(report, journeyName) {
  const list = (report?.activated_audiences ?? []).filter((a) => a.journey === journeyName || a.enter || a.leave);
  if (!list.length) return el("p", { class: "muted", text: "No activated audience would change." });
  return el(
    "table",
    { class: "table compact dry-run" },
    el("thead", {}, el("tr", {}, el("th", { text: "Activated audience" }), el("th", { class: "num", text: "Would enter" }), el("th", { class: "num", text: "Would leave" }))),
    el(
      "tbody",
      {},
      list.map((a) =>
        el(
          "tr",
          { "data-dry-run": a.audience_id },
          el("td", { text: `${a.journey} › ${a.milestone} #${a.audience_id}` }),
          el("td", { class: "num adds", text: `+${fmt(a.enter)}` }),
          el("td", { class: "num removes", text: `−${fmt(a.leave)}` }),
        ),
      ),
    ),
  );
}

export function relativeTime(ms) {
  const s = Math.round((Date.now() - ms) / 1000);
  if (s < 60) return "just now";
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return new Date(ms).toLocaleDateString("en-GB", { day: "numeric", month: "short", year: "numeric" });
}

for (const t of document.querySelectorAll("time[data-ms]")) {
  const ms = Number(t.dataset.ms);
  t.textContent = relativeTime(ms);
  t.title = new Date(ms).toISOString().replace("T", " ").slice(0, 16) + " UTC";
}
