// Settings: limits and windows, workspaces and inputs (a new input's secret is shown once).
import { api, dialog, el, toast } from "./common.js";

const form = document.getElementById("settings-form");
form.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  for (const p of form.querySelectorAll(".field-error")) p.textContent = "";
  const body = {};
  for (const k of ["audience_limit", "lookback_days", "profile_lifetime_days", "retention_days"]) {
    const v = form.elements[k].value.trim();
    if (v === "" || !/^\d+$/.test(v)) {
      form.querySelector(`[data-error-for="${k}"]`).textContent = "Enter a whole number.";
      return;
    }
    body[k] = Number(v);
  }
  try {
    await api("PATCH", "/api/v1/settings", body);
    toast("Settings saved");
    setTimeout(() => location.reload(), 600);
  } catch (e) {
    const m = /^(audience_limit|lookback_days|profile_lifetime_days|retention_days)\b/.exec(e.message) ?? /\b(audience_limit|lookback_days|profile_lifetime_days|retention_days)\b/.exec(e.message);
    form.querySelector(`[data-error-for="${m ? m[1] : "form"}"]`).textContent = e.message;
  }
});

function secretShown(inp) {
  return el(
    "div",
    { class: "secret-box" },
    el("p", { class: "callout warn", text: "Copy the secret now: it is shown only once." }),
    el("label", { text: "Key" }),
    el("code", { class: "key", "data-input-key": "", text: inp.key }),
    el("label", { text: "Secret" }),
    el("code", { class: "key", "data-input-secret": "", text: inp.secret }),
  );
}

document.getElementById("new-workspace").addEventListener("click", async () => {
  const done = await dialog({
    title: "New workspace",
    body: el("div", { class: "form" }, el("label", { text: "Name" }), el("input", { name: "name", maxlength: "100", required: true })),
    confirm: "Create",
    onSubmit: (v) => api("POST", "/api/v1/workspaces", { name: v.name.trim() }),
  });
  if (done) location.reload();
});

for (const b of document.querySelectorAll("[data-new-input]")) {
  b.addEventListener("click", async () => {
    const created = await dialog({
      title: `Add an input to ${b.dataset.workspaceName}`,
      body: el(
        "div",
        { class: "form" },
        el("label", { text: "Name" }),
        el("input", { name: "name", maxlength: "100", required: true }),
        el("label", { text: "Platform" }),
        el("select", { name: "platform" }, ["web", "ios", "android", "server", "feed"].map((p) => el("option", { value: p, text: p }))),
      ),
      confirm: "Create input",
      onSubmit: (v) => api("POST", "/api/v1/inputs", { workspace: Number(b.dataset.newInput), name: v.name.trim(), platform: v.platform }),
    });
    if (!created) return;
    await dialog({ title: `Input ${created.name} created`, body: secretShown(created), confirm: "Done" });
    location.reload();
  });
}

for (const b of document.querySelectorAll("[data-rotate]")) {
  b.addEventListener("click", async () => {
    const rotated = await dialog({
      title: "Rotate the secret?",
      body: el("p", { class: "callout warn", text: "Senders using the old secret are refused from now on." }),
      confirm: "Rotate",
      danger: true,
      onSubmit: () => api("POST", `/api/v1/inputs/${b.dataset.rotate}/rotate-secret`),
    });
    if (rotated) await dialog({ title: "New secret", body: secretShown(rotated), confirm: "Done" });
  });
}

for (const b of document.querySelectorAll("[data-toggle-input]")) {
  b.addEventListener("click", async () => {
    try {
      await api("PATCH", `/api/v1/inputs/${b.dataset.toggleInput}`, { enabled: b.dataset.enabled !== "true" });
      location.reload();
    } catch (e) {
      toast(e.message, "error");
    }
  });
}
