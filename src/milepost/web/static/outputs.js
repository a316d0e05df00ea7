// Outputs: create outputs, connect audiences, delivery status and the live view of recent messages.
import { api, dialog, el, fmt, relativeTime, toast } from "./common.js";

const data = JSON.parse(document.getElementById("outputs-data").textContent);

const SETTINGS_HINT = {
  webhook: '{"url": "https://example.com/hook", "secret": "…"}',
  file: '{"directory": "/var/lib/milepost/out"}',
  firehose: '{"url": "https://…", "api_key": "…", "api_secret": "…"}',
  braze: '{"base_url": "https://rest.iad-01.braze.com", "api_key": "…"}',
};

async function loadStatus(row) {
  const id = row.dataset.connection;
  try {
    const c = await api("GET", `/api/v1/connections/${id}`);
    const d = c.delivery ?? {};
    for (const k of ["sent", "pending", "failed", "ineligible"]) row.querySelector(`[data-field="${k}"]`).textContent = fmt(d[k] ?? 0);
    const err = row.querySelector('[data-field="last_error"]');
    err.textContent = d.last_error ?? "";
    err.title = d.last_error ? `Last attempt ${d.last_attempt_at ? relativeTime(d.last_attempt_at) : "unknown"}` : "";
    const h = row.querySelector('[data-field="health"]');
    h.textContent = c.health;
    h.className = `pill health-${c.health}`;
  } catch (e) {
    row.querySelector('[data-field="last_error"]').textContent = e.message;
  }
}

const rows = [...document.querySelectorAll("tr[data-connection]")];
rows.forEach(loadStatus);
setInterval(() => rows.forEach(loadStatus), 5000);

document.getElementById("new-output").addEventListener("click", async () => {
  const type = el("select", { name: "type" }, ["webhook", "file", "firehose", "braze"].map((t) => el("option", { value: t, text: t })));
  const settings = el("textarea", { name: "settings", class: "json", rows: "4", spellcheck: "false", placeholder: SETTINGS_HINT.webhook });
  type.addEventListener("change", () => (settings.placeholder = SETTINGS_HINT[type.value]));
  const done = await dialog({
    title: "New output",
    body: el("div", { class: "form" }, el("label", { text: "Type" }), type, el("label", { text: "Name" }), el("input", { name: "name", maxlength: "200", required: true }), el("label", { text: "Settings (JSON)" }), settings, el("p", { class: "muted small", text: "Credentials are stored encrypted and never shown again." })),
    confirm: "Create output",
    onSubmit: async (v) => {
      let parsed;
      try {
        parsed = JSON.parse(v.settings || "{}");
      } catch {
        throw new Error("settings: not valid JSON");
      }
      return api("POST", "/api/v1/outputs", { type: v.type, name: v.name.trim(), settings: parsed });
    },
  });
  if (done) location.reload();
});

for (const b of document.querySelectorAll("[data-connect-output]")) {
  b.addEventListener("click", async () => {
    const audience = el("select", { name: "audience_id" }, data.audiences.map((a) => el("option", { value: a.id, text: `${a.journey} › ${a.milestone} (#${a.id})` })));
    const done = await dialog({
      title: "Connect an audience",
      body: el(
        "div",
        { class: "form" },
        el("label", { text: "Audience" }),
        audience,
        el("label", { text: "Status" }),
        el("select", { name: "status" }, el("option", { value: "active", text: "Active (uses a credit)" }), el("option", { value: "inactive", text: "Inactive" })),
        el("label", { text: "Settings (JSON, optional)" }),
        el("textarea", { name: "settings", class: "json small", rows: "3", placeholder: "{}" }),
      ),
      confirm: "Connect",
      onSubmit: async (v) => {
        let settings = {};
        try {
          settings = JSON.parse(v.settings || "{}");
        } catch {
          throw new Error("settings: not valid JSON");
        }
        return api("POST", `/api/v1/audiences/${v.audience_id}/connections`, { output_id: Number(b.dataset.connectOutput), status: v.status, settings });
      },
    });
    if (done) location.reload();
  });
}

for (const b of document.querySelectorAll("[data-delete-output]")) {
  b.addEventListener("click", async () => {
    const done = await dialog({ title: "Delete output?", body: el("p", { text: "The output and its credentials are deleted." }), confirm: "Delete", danger: true, onSubmit: () => api("DELETE", `/api/v1/outputs/${b.dataset.deleteOutput}`) });
    if (done) location.reload();
  });
}

for (const b of document.querySelectorAll("[data-resume]")) {
  b.addEventListener("click", async () => {
    try {
      await api("POST", `/api/v1/connections/${b.dataset.resume}/resume`);
      toast("Delivery resumed");
      location.reload();
    } catch (e) {
      toast(e.message, "error");
    }
  });
}

for (const b of document.querySelectorAll("[data-toggle-connection]")) {
  b.addEventListener("click", async () => {
    const row = b.closest("tr");
    const active = row.dataset.status === "active";
    const change = () => api("PATCH", `/api/v1/connections/${b.dataset.toggleConnection}`, { status: active ? "inactive" : "active" });
    if (active) {
      const done = await dialog({
        title: "Deactivate this connection?",
        body: el("p", { class: "callout warn", text: "While the connection is inactive the partner stops receiving changes, so its copy of the audience may go out of sync." }),
        confirm: "Deactivate",
        danger: true,
        onSubmit: change,
      });
      if (done) location.reload();
      return;
    }
    try {
      await change();
      location.reload();
    } catch (e) {
      toast(e.message, "error");
    }
  });
}

const time = (ms) => new Date(ms).toISOString().slice(11, 19);

function messageRow(m) {
  const req = m.request ?? {};
  const res = m.response ?? {};
  // MPIDs are 64-bit: JavaScript numbers would round them, so the message is named by its key.
  const key = req.idempotency_key ?? "";
  return el(
    "tr",
    { "data-live-message": m.seq ?? "" },
    el("td", { class: "mono", text: time(m.at) }),
    el("td", { text: m.kind }),
    el("td", { class: "num" }, `${fmt(req.records ?? 0)} `, el("span", { class: "muted small", text: `(+${fmt(req.adds ?? 0)} / −${fmt(req.removes ?? 0)})` })),
    el("td", { class: "mono small key-cell", title: key, text: key }),
    el("td", {}, el("span", { class: `pill ${res.error ? "health-faulted" : "health-ok"}`, text: res.status ?? "—" }), res.error ? el("span", { class: "error-text small", text: ` ${res.error}` }) : null),
    el("td", { text: m.outcome ?? "" }),
  );
}

function deadRow(d) {
  return el("tr", {}, el("td", { class: "mono", text: time(d.at) }), el("td", { text: `${d.record?.action ?? ""} ${d.record?.id ?? ""}` }), el("td", {}, el("span", { class: "pill health-faulted", text: d.status })), el("td", { class: "mono small", text: d.body ?? "" }));
}

async function live(id, box) {
  try {
    const resp = await api("GET", `/api/v1/connections/${id}/live`);
    const messages = resp.messages ?? [];
    const dead = resp.dead_letters ?? [];
    box.replaceChildren(
      messages.length
        ? el(
            "table",
            { class: "table compact live-table" },
            el("thead", {}, el("tr", {}, ["Time", "Message", "Records", "Idempotency key", "Partner answer", "Outcome"].map((h) => el("th", { text: h })))),
            el("tbody", {}, messages.slice(0, 30).map(messageRow)),
          )
        : el("p", { class: "muted", text: "No message sent since the server started." }),
      dead.length
        ? el("div", {}, el("h3", { text: "Dead letters" }), el("table", { class: "table compact" }, el("tbody", {}, dead.map(deadRow))))
        : "",
    );
  } catch (e) {
    const c = await api("GET", `/api/v1/connections/${id}`).catch(() => null);
    const d = c?.delivery ?? {};
    box.replaceChildren(
      el("p", { class: "muted", text: `The live view is not available (${e.message}). Delivery: phase ${d.phase ?? "?"}, ${fmt(d.sent ?? 0)} sent, ${fmt(d.pending ?? 0)} pending, ${fmt(d.failed ?? 0)} failed${d.last_success_at ? `, last success ${relativeTime(d.last_success_at)}` : ""}.` }),
    );
  }
}

for (const b of document.querySelectorAll("[data-live]")) {
  let timer = null;
  b.addEventListener("click", () => {
    const row = document.querySelector(`[data-live-row="${b.dataset.live}"]`);
    row.hidden = !row.hidden;
    clearInterval(timer);
    if (!row.hidden) {
      const box = row.querySelector(".live");
      box.textContent = "Loading…";
      live(b.dataset.live, box);
      timer = setInterval(() => live(b.dataset.live, box), 3000);
    }
  });
}

const anchor = /^#connection-(\d+)$/.exec(location.hash);
if (anchor) document.querySelector(`tr[data-connection="${anchor[1]}"]`)?.classList.add("highlight");
