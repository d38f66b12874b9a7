// Tenants: each tenant's limits, its API keys (prefix only: the API never returns a token)
// and the 429s it got recently, by kind.

import * as api from "../api.js";
import { badge, fill, h, num, table } from "../dom.js";

export const title = "Tenants";

export function mount(root) {
  const list = table("Tenants", ["Tenant", "Rate / s", "Burst", "Concurrency", "Keys (prefix, id, label)", "Recent 429s"], {
    empty: "No tenant exists yet.",
  });
  const cut = h("p", { class: "help", hidden: true }, "Only the first 500 tenants (by name) and 5,000 keys are listed; `spectral tenants list` and `spectral tenants keys list` show them all.");
  fill(root, cut, list.wrap);
  return {
    interval: 3000,
    async refresh() {
      const data = await api.get("/api/operator/tenants");
      cut.hidden = !data.truncated;
      const span = data.recent_429_window_s;
      list.table.querySelector("caption").textContent = span
        ? `Tenants (429s of the last ${Math.round(span / 60)} min, as this API process saw them)`
        : "Tenants";
      list.sync(data.tenants || [], (t) => t.org, (t) => {
        const l = t.limits || {};
        const r = t.recent_429 || { total: 0, by_kind: {} };
        return h("tr", { "data-tenant": t.org },
          h("th", { scope: "row" }, t.org),
          h("td", { class: "num" }, l.rate_per_s ?? "–"),
          h("td", { class: "num" }, num(l.burst)),
          h("td", { class: "num" }, num(l.concurrency)),
          h("td", {}, (t.keys || []).length
            ? h("ul", { class: "keys" }, t.keys.map((k) => h("li", {},
              h("code", {}, `${k.prefix}…`), " ", h("code", {}, String(k.id)),
              k.label ? ` “${k.label}”` : null,
              k.operator ? [" ", badge("operator", "info")] : null,
              k.revoked ? [" ", badge("revoked", "fail")] : null)))
            : h("span", { class: "muted" }, "no keys")),
          h("td", {}, `${num(r.total)}`,
            r.total ? ` (${Object.entries(r.by_kind || {}).map(([k, n]) => `${k} ${n}`).join(", ")})` : ""));
      });
    },
  };
}
