// Modules: every pin by (org, domain, action, world_model_version) with its content hash and
// approvals (signer, expiry, state). An active approval can be revoked after a confirmation;
// approving stays a signed act on the operator's own machine, so a pin without an active
// approval shows the exact `spectral modules approve` command to run there.

import * as api from "../api.js";
import { announce, badge, confirmAction, fill, h, message, table, when } from "../dom.js";

export const title = "Modules";

const pinKey = (p) => [p.org, p.domain, p.action, p.world_model_version].join("/");

export function mount(root) {
  const result = h("p", { id: "modules-result", hidden: true });
  const cut = h("p", { class: "help", hidden: true }, "Only the first 500 pins (by key) and the 20 newest approvals of each are listed; `spectral modules list` shows them all.");
  const list = table("Pinned modules", ["Pin (org / domain / action / world model)", "Content hash", "Approvals", "To approve"], {
    empty: "No module is pinned.",
  });
  fill(root, result, cut, list.wrap);

  async function revoke(pin, approval) {
    const ok = await confirmAction(
      "Revoke approval",
      `Revoke approval ${approval.id} (signer ${approval.signer}) of ${pinKey(pin)}? ` +
        "/api/decide refuses this pin within a second, on every API process, until a new approval is added.",
      "Revoke",
    );
    if (!ok) return;
    try {
      await api.post(`/api/operator/approvals/${encodeURIComponent(approval.id)}/revoke`, {});
      const text = `Approval ${approval.id} of ${pinKey(pin)} revoked.`;
      message(result, text, "info");
      announce(text);
      await view.refresh();
    } catch (err) {
      message(result, `Revoke failed: ${err.message}`, "error");
    }
  }

  function approvals(pin) {
    const list = pin.approvals || [];
    if (!list.length) return h("p", { class: "muted" }, "none");
    return h("ul", { class: "approvals" }, list.map((a) =>
      h("li", { "data-approval": a.id },
        badge(a.state), " ",
        h("span", {}, `#${a.id} by `, h("code", {}, a.signer), `, expires ${a.expires_at ? when(a.expires_at) : "never"}`),
        a.state === "active"
          ? [" ", h("button", {
            type: "button",
            class: "danger small",
            "aria-label": `Revoke approval ${a.id} of ${pinKey(pin)}`,
            onclick: () => revoke(pin, a),
          }, "Revoke")]
          : null)));
  }

  function approveCommand(pin) {
    if (!pin.approve_command) return h("span", { class: "muted" }, "approved");
    const code = h("code", { class: "command" }, pin.approve_command);
    const copy = h("button", { type: "button", class: "small", "aria-label": `Copy the approve command for ${pinKey(pin)}` }, "Copy");
    copy.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(pin.approve_command);
        announce("Command copied.");
      } catch {
        const range = document.createRange();
        range.selectNodeContents(code);
        getSelection().removeAllRanges();
        getSelection().addRange(range);
        announce("Command selected; copy it with your keyboard.");
      }
    });
    return h("div", { class: "pending" },
      h("p", {}, badge("pending"), " Run on the machine that holds the operator's private key:"),
      h("pre", {}, code), copy);
  }

  const view = {
    interval: 3000,
    async refresh() {
      const data = await api.get("/api/operator/modules");
      cut.hidden = !data.truncated;
      list.sync(data.pins || [], (p) => `${pinKey(p)}@${p.hash}`, (p) =>
        h("tr", { "data-pin": pinKey(p) },
          h("th", { scope: "row" }, h("code", {}, pinKey(p))),
          h("td", {}, h("code", { class: "hash", title: p.hash }, `${String(p.hash).slice(0, 16)}…`)),
          h("td", {}, approvals(p)),
          h("td", {}, approveCommand(p))));
    },
  };
  return view;
}
