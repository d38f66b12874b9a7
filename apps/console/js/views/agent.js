// World Agent: the turns of a generation by status, each dead turn with its reason, and
// re-drive (one, the selection or all, after a confirmation).

import * as api from "../api.js";
import {
  announce, badge, confirmAction, fill, generationPicker, h, message, num, pickGeneration, table, when,
} from "../dom.js";

export const title = "World Agent";

export function mount(root, ctx) {
  let generation = null;
  let dead = [];
  const selected = new Set();
  const picker = generationPicker("agent-generation", { onChange: (g) => ctx.setParams({ generation: g }) });
  const statuses = table("Turns by status", ["Status", "Turns"], { empty: "No turn in this generation.", narrow: true });
  const result = h("p", { id: "agent-result", hidden: true });
  const redriveSelected = h("button", { type: "button", id: "agent-redrive-selected", disabled: true }, "Re-drive selected");
  const redriveAll = h("button", { type: "button", id: "agent-redrive-all", class: "danger", disabled: true }, "Re-drive all");
  const turns = table("Dead turns, newest first", ["Select", "Turn", "Tenant / domain", "Attempts", "Reason", "Created", "Action"], {
    empty: "No dead turn.",
  });
  fill(
    root,
    h("div", { class: "toolbar" }, picker.el),
    h("section", { "aria-labelledby": "agent-status-title" }, h("h2", { id: "agent-status-title" }, "Turns"), statuses.wrap),
    h("section", { "aria-labelledby": "agent-dead-title" }, h("h2", { id: "agent-dead-title" }, "Dead turns"),
      h("div", { class: "toolbar" }, redriveSelected, redriveAll), result, turns.wrap),
  );

  const updateButtons = () => {
    for (const id of [...selected]) if (!dead.some((t) => t.id === id)) selected.delete(id);
    redriveSelected.disabled = selected.size === 0;
    redriveSelected.textContent = `Re-drive selected (${selected.size})`;
    redriveAll.disabled = dead.length === 0;
  };

  async function redrive(body, what) {
    const ok = await confirmAction("Re-drive dead turns",
      `Re-drive ${what} of generation ${generation}? The World Agent runs them again.`, "Re-drive");
    if (!ok) return;
    try {
      const r = await api.post("/api/operator/agent/redrive", { generation, ...body });
      const text = `Re-drove ${r.redriven} turn${r.redriven === 1 ? "" : "s"} of generation ${generation}.`;
      message(result, text, "info");
      announce(text);
      selected.clear();
      for (const box of turns.tbody.querySelectorAll("input[type=checkbox]")) box.checked = false;
      await view.refresh();
    } catch (err) {
      message(result, `Re-drive failed: ${err.message}`, "error");
    }
  }
  redriveSelected.addEventListener("click", () => redrive({ ids: [...selected] }, `${selected.size} selected turn(s)`));
  redriveAll.addEventListener("click", () => redrive({ all: true }, "all dead turns"));

  const view = {
    interval: 2000,
    async refresh() {
      const { selected: gen, generations } = await pickGeneration(api, ctx.params);
      generation = gen;
      picker.update(generations, gen);
      const data = gen === null || gen === undefined ? { by_status: {}, dead: [] }
        : await api.get(`/api/operator/agent${api.qs({ generation: gen })}`);
      const counts = Object.entries(data.by_status || {}).map(([status, n]) => ({ status, n }));
      statuses.sync(counts, (c) => c.status, (c) =>
        h("tr", {}, h("th", { scope: "row" }, badge(c.status)), h("td", { class: "num" }, num(c.n))));
      dead = data.dead || [];
      turns.sync(dead, (t) => t.id, (t) => {
        const id = `agent-select-${String(t.id).replace(/[^A-Za-z0-9_-]/g, "_")}`;
        const box = h("input", { type: "checkbox", id, checked: selected.has(t.id) });
        box.addEventListener("change", () => {
          if (box.checked) selected.add(t.id);
          else selected.delete(t.id);
          updateButtons();
        });
        return h("tr", { "data-turn": t.id },
          h("td", {}, box, h("label", { for: id, class: "visually-hidden" }, `Select turn ${t.id}`)),
          h("th", { scope: "row" }, h("code", {}, String(t.id))),
          h("td", {}, t.org ? `${t.org} / ${t.domain ?? "–"}` : "–"),
          h("td", { class: "num" }, num(t.attempts)),
          h("td", { class: "wrap error-text" }, t.reason || "–"),
          h("td", {}, when(t.created_at)),
          h("td", {}, h("button", { type: "button", "aria-label": `Re-drive turn ${t.id}`,
            onclick: () => redrive({ ids: [t.id] }, `turn ${t.id}`) }, "Re-drive")));
      });
      updateButtons();
    },
  };
  return view;
}
