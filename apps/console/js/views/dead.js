// Dead rows of one generation: topic, attempts, last error, payload preview. Re-drive one
// row, the selected rows or all of them, each after a confirmation; the API re-drives only
// rows of the generation named in the request.

import * as api from "../api.js";
import {
  announce, confirmAction, fill, generationPicker, h, message, num, pickGeneration, table, when,
} from "../dom.js";

export const title = "Dead rows";

export function mount(root, ctx) {
  let generation = null;
  let rows = [];
  let deadTotal = 0;
  const selected = new Set();
  const picker = generationPicker("dead-generation", { onChange: (g) => ctx.setParams({ generation: g }) });
  const result = h("p", { id: "dead-result", hidden: true });
  const redriveSelected = h("button", { type: "button", id: "redrive-selected", disabled: true }, "Re-drive selected");
  const redriveAll = h("button", { type: "button", id: "redrive-all", class: "danger", disabled: true }, "Re-drive all");
  const list = table("Dead rows of the generation", ["Select", "Row", "Topic", "Attempts", "Last error", "Payload", "Created", "Action"], {
    empty: "No dead rows in this generation.",
  });
  fill(root, h("div", { class: "toolbar" }, picker.el, redriveSelected, redriveAll), result, list.wrap);

  const updateButtons = () => {
    for (const id of [...selected]) if (!rows.some((r) => r.id === id)) selected.delete(id);
    redriveSelected.disabled = selected.size === 0;
    redriveSelected.textContent = `Re-drive selected (${selected.size})`;
    redriveAll.disabled = deadTotal === 0;
    redriveAll.textContent = `Re-drive all (${deadTotal})`;
  };

  async function redrive(body, what) {
    const ok = await confirmAction(
      "Re-drive dead rows",
      `Re-drive ${what} of generation ${generation}? The rows go back to pending and the ` +
        "workers of that generation handle them again.",
      "Re-drive",
    );
    if (!ok) return;
    try {
      const r = await api.post("/api/operator/dead/redrive", { generation, ...body });
      const text = `Re-drove ${r.redriven} row${r.redriven === 1 ? "" : "s"} of generation ${generation}.`;
      message(result, text, "info");
      announce(text);
      selected.clear();
      for (const box of list.tbody.querySelectorAll("input[type=checkbox]")) box.checked = false;
      await view.refresh();
    } catch (err) {
      message(result, `Re-drive failed: ${err.message}`, "error");
    }
  }

  redriveSelected.addEventListener("click", () =>
    redrive({ ids: [...selected].sort((a, b) => a - b) }, `${selected.size} selected row${selected.size === 1 ? "" : "s"}`));
  redriveAll.addEventListener("click", () => redrive({ all: true }, `all ${deadTotal} dead rows`));

  const row = (r) => {
    const box = h("input", { type: "checkbox", id: `dead-select-${r.id}`, checked: selected.has(r.id) });
    box.addEventListener("change", () => {
      if (box.checked) selected.add(r.id);
      else selected.delete(r.id);
      updateButtons();
    });
    return h(
      "tr",
      { "data-row": r.id },
      h("td", {}, box, h("label", { for: `dead-select-${r.id}`, class: "visually-hidden" }, `Select row ${r.id}`)),
      h("th", { scope: "row", class: "num" }, r.id),
      h("td", {}, h("code", {}, r.topic)),
      h("td", { class: "num" }, num(r.attempts)),
      h("td", { class: "wrap error-text" }, r.last_error || "–"),
      h("td", { class: "wrap" }, h("code", {}, r.payload_preview || "")),
      h("td", {}, when(r.created_at)),
      h("td", {}, h("button", {
        type: "button",
        "aria-label": `Re-drive row ${r.id}`,
        onclick: () => redrive({ ids: [r.id] }, `row ${r.id}`),
      }, "Re-drive")),
    );
  };

  const view = {
    interval: 2000,
    async refresh() {
      const { selected: gen, generations, info } = await pickGeneration(api, ctx.params);
      generation = gen;
      picker.update(generations, gen);
      if (gen === null || gen === undefined) {
        rows = [];
      } else {
        const data = await api.get(`/api/operator/dead${api.qs({ generation: gen, limit: 100 })}`);
        rows = data.rows || [];
      }
      deadTotal = Math.max(rows.length, (info && info.counts && info.counts.dead) || 0);
      list.sync(rows, (r) => r.id, row);
      updateButtons();
    },
  };
  return view;
}
