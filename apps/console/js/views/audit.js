// Audit: every operator action (who, what, when, on what), newest first.

import * as api from "../api.js";
import { fill, h, table, when } from "../dom.js";

export const title = "Audit";

export function mount(root) {
  const list = table("Operator actions, newest first", ["When", "Operator", "Action", "Target", "Detail"], {
    empty: "No operator action has been recorded yet.",
  });
  fill(root, list.wrap);
  return {
    interval: 3000,
    async refresh() {
      const data = await api.get("/api/operator/audit?limit=100");
      list.sync(data.entries || [], (e) => e.id, (e) =>
        h("tr", { "data-audit": e.id },
          h("td", {}, when(e.at)),
          h("td", {}, h("code", {}, e.operator), e.operator_label ? ` “${e.operator_label}”` : null),
          h("th", { scope: "row" }, e.action),
          h("td", {}, h("code", {}, e.target)),
          h("td", { class: "wrap" }, h("code", {}, e.detail && Object.keys(e.detail).length ? JSON.stringify(e.detail) : ""))));
    },
  };
}
