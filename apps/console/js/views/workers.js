// Workers: every registered process of a generation (or of all), with its state, heartbeat
// age and reconnects. A lost one (its heartbeat older than the stale bound) is listed first,
// marked LOST in words and in colour, and announced once.

import * as api from "../api.js";
import { announce, badge, fill, generationPicker, h, num, pickGeneration, seconds, table } from "../dom.js";

export const title = "Workers";

export function mount(root, ctx) {
  const picker = generationPicker("workers-generation", {
    allowAll: true,
    onChange: (g) => ctx.setParams(g === null ? {} : { generation: g }),
  });
  const lostNote = h("p", { id: "workers-lost", class: "message message-error", hidden: true });
  const list = table(
    "Registered processes (lost ones first)",
    ["Process", "Role", "Generation", "Version", "Host", "PID", "State", "Heartbeat age", "Reconnects"],
    { empty: "No process is registered for this selection." },
  );
  fill(root, h("div", { class: "toolbar" }, picker.el), lostNote, list.wrap);
  const seenLost = new Set();
  return {
    interval: 1000,
    async refresh() {
      const { selected, generations } = await pickGeneration(api, ctx.params, { allowAll: true });
      picker.update(generations, selected);
      const data = await api.get(`/api/operator/workers${api.qs({ generation: selected })}`);
      const workers = [...(data.workers || [])].sort(
        (a, b) => Number(b.lost) - Number(a.lost) || b.generation - a.generation || String(a.id).localeCompare(String(b.id)),
      );
      list.sync(workers, (w) => w.id, (w) =>
        h(
          "tr",
          { class: w.lost ? "lost" : null, "data-worker": w.id },
          h("th", { scope: "row" }, h("code", {}, String(w.id))),
          h("td", {}, w.role),
          h("td", { class: "num" }, w.generation),
          h("td", {}, w.version),
          h("td", {}, w.host),
          h("td", { class: "num" }, w.pid),
          h("td", { class: "state" }, w.lost ? badge("LOST", "lost") : badge(w.state)),
          h("td", { class: "num" }, seconds(w.heartbeat_age_s)),
          h("td", { class: "num" }, num(w.reconnects)),
        ),
      );
      const lost = workers.filter((w) => w.lost);
      lostNote.hidden = lost.length === 0;
      lostNote.textContent = lost.length
        ? `${lost.length} process${lost.length > 1 ? "es are" : " is"} lost: no heartbeat within the stale bound` +
          (data.stale_after_s ? ` (${data.stale_after_s} s).` : ".")
        : "";
      for (const w of lost) {
        if (!seenLost.has(w.id)) announce(`Process ${w.id} (pid ${w.pid}) is lost.`);
        seenLost.add(w.id);
      }
    },
  };
}
