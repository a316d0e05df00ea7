// Journeys list (delete an empty journey) and the new-journey form.
import { api, dialog, el, toast } from "./common.js";

for (const btn of document.querySelectorAll("[data-delete-journey]")) {
  btn.addEventListener("click", async () => {
    const row = btn.closest("tr");
    const ok = await dialog({
      title: "Delete journey?",
      body: el("p", {}, "Delete ", el("strong", { text: row.dataset.name }), "? This cannot be undone."),
      confirm: "Delete journey",
      danger: true,
    });
    if (!ok) return;
    try {
      await api("DELETE", `/api/v1/journeys/${btn.dataset.deleteJourney}`);
      row.remove();
      toast(`Deleted ${row.dataset.name}`);
    } catch (e) {
      toast(e.message, "error");
    }
  });
}

const form = document.getElementById("new-journey-form");
if (form) {
  const show = (field, message) => {
    const p = form.querySelector(`[data-error-for="${field}"]`);
    if (p) p.textContent = message ?? "";
  };
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    ["name", "inputs", "form"].forEach((f) => show(f, ""));
    const name = form.elements.name.value.trim();
    const inputs = [...form.querySelectorAll('input[name="inputs"]:checked')].map((c) => Number(c.value));
    if (!name) return show("name", "Give the journey a name.");
    if (!inputs.length) return show("inputs", "Choose at least one input.");
    try {
      const created = await api("POST", "/api/v1/journeys", { name, inputs });
      location.href = `/journeys/${created.id}`;
    } catch (e) {
      const m = /^(name|inputs)\b/.exec(e.message);
      show(m ? m[1] : e.message.includes("name") ? "name" : "form", e.message);
    }
  });
}
