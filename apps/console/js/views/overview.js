// Overview: the running version and generation, /health with every check and its verdict,
// and whether a deploy could go ahead now (and if not, why).

import * as api from "../api.js";
import { announce, badge, fill, h, table } from "../dom.js";

export const title = "Overview";

function observed(check) {
  if (check.observedValue === undefined || check.observedValue === null) return "–";
  const v = typeof check.observedValue === "object" ? JSON.stringify(check.observedValue) : check.observedValue;
  return check.observedUnit ? `${v} ${check.observedUnit}` : String(v);
}

export function mount(root) {
  const facts = h("dl", { class: "facts" });
  const deploy = h("section", { "aria-labelledby": "deploy-title", class: "card" });
  const checks = table("Health checks", ["Check", "Verdict", "Observed", "Output"], {
    empty: "The health document lists no checks.",
  });
  fill(
    root,
    h("section", { "aria-labelledby": "running-title", class: "card" }, h("h2", { id: "running-title" }, "Running"), facts),
    deploy,
    h("section", { "aria-labelledby": "health-title" }, h("h2", { id: "health-title" }, "Health"), checks.wrap),
  );
  let lastVerdict = null;
  return {
    interval: 2000,
    async refresh() {
      const o = await api.get("/api/operator/overview");
      const health = o.health || {};
      fill(
        facts,
        h("dt", {}, "Version"), h("dd", { id: "overview-version" }, o.version),
        h("dt", {}, "Generation"), h("dd", { id: "overview-generation" }, o.generation),
        h("dt", {}, "Health"), h("dd", { id: "overview-health" }, badge(health.status || "unknown")),
      );
      const go = o.deploy && o.deploy.go;
      const reasons = (o.deploy && o.deploy.reasons) || [];
      fill(
        deploy,
        h("h2", { id: "deploy-title" }, "Deploy go / no-go"),
        h("p", { id: "deploy-verdict" }, go ? badge("go", "pass") : badge("no-go", "fail"), " ",
          go ? "A new generation could start now." : "A deploy would not go ahead now:"),
        reasons.length ? h("ul", {}, reasons.map((r) => h("li", {}, r))) : null,
      );
      const rows = [];
      for (const [name, list] of Object.entries(health.checks || {})) {
        list.forEach((c, i) => rows.push({ name, i, ...c }));
      }
      checks.sync(rows, (r) => `${r.name}#${r.i}`, (r) =>
        h("tr", {}, h("th", { scope: "row" }, r.name), h("td", {}, badge(r.status)), h("td", {}, observed(r)),
          h("td", { class: "wrap" }, r.output || "")));
      if (lastVerdict !== null && lastVerdict !== health.status) {
        announce(`Health is now ${health.status}.`);
      }
      lastVerdict = health.status;
    },
  };
}
