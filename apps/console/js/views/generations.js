// Generations: each generation's verdict (running / draining / drained / stranded), its rows
// by status, the oldest pending age and the handling rate, refreshed every second so that a
// cutover can be watched as it happens.

import * as api from "../api.js";
import { announce, badge, fill, h, num, seconds, table } from "../dom.js";

export const title = "Generations";

export function mount(root) {
  const summary = h("p", { id: "generations-current" });
  const list = table(
    "Generations, newest first",
    ["Generation", "Verdict", "Pending", "In flight", "Done", "Dead", "Oldest pending", "Handled / s", "Workers live", "API live"],
    { empty: "No generation has been allocated yet." },
  );
  fill(root, summary, list.wrap);
  const verdicts = new Map();
  return {
    interval: 1000,
    async refresh() {
      const data = await api.get("/api/operator/generations");
      const gens = [...(data.generations || [])].sort((a, b) => b.generation - a.generation);
      fill(summary, "Current generation: ", h("strong", {}, data.current ?? "–"));
      list.sync(gens, (g) => g.generation, (g) => {
        const c = g.counts || {};
        return h(
          "tr",
          { id: `generation-${g.generation}`, class: g.generation === data.current ? "current" : null },
          h("th", { scope: "row" }, String(g.generation), g.generation === data.current ? " (current)" : ""),
          h("td", { class: "verdict" }, badge(g.verdict)),
          h("td", { class: "num" }, num(c.pending)),
          h("td", { class: "num" }, num(c.in_flight)),
          h("td", { class: "num" }, num(c.done)),
          h("td", { class: "num" }, c.dead ? h("a", { href: `#/dead?generation=${g.generation}` }, num(c.dead)) : num(c.dead)),
          h("td", { class: "num" }, seconds(g.oldest_pending_age_s)),
          h("td", { class: "num" }, g.handled_per_s === null || g.handled_per_s === undefined ? "–" : Number(g.handled_per_s).toFixed(1)),
          h("td", { class: "num" }, num(g.workers_live)),
          h("td", { class: "num" }, num(g.api_live)),
        );
      });
      for (const g of gens) {
        const before = verdicts.get(g.generation);
        if (before !== undefined && before !== g.verdict) announce(`Generation ${g.generation} is now ${g.verdict}.`);
        verdicts.set(g.generation, g.verdict);
      }
    },
  };
}
