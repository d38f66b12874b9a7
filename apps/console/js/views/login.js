// Sign in: the operator key is posted once to /api/operator/session and dropped; the API
// answers with an HttpOnly session cookie and a CSRF token that api.js keeps in memory.

import * as api from "../api.js";
import { fill, h, message } from "../dom.js";

export const title = "Sign in";

export function mount(root, { note, onSignedIn }) {
  const input = h("input", {
    id: "operator-key",
    name: "operator-key",
    type: "password",
    autocomplete: "off",
    spellcheck: "false",
    required: true,
    "aria-describedby": "operator-key-help",
  });
  const status = h("p", { id: "login-message", hidden: true });
  const button = h("button", { type: "submit" }, "Sign in");
  const form = h(
    "form",
    { class: "login", "aria-labelledby": "login-title" },
    h("h1", { id: "login-title", tabindex: "-1" }, "Sign in"),
    h("div", { class: "field" }, h("label", { for: "operator-key" }, "Operator API key"), input),
    h(
      "p",
      { id: "operator-key-help", class: "help" },
      "An operator key from ",
      h("code", {}, "spectral tenants keys create ORG --operator"),
      ". It is sent once to start a session and is not stored by this page; tenant keys are refused.",
    ),
    button,
    status,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = input.value.trim();
    if (!token) return;
    button.disabled = true;
    message(status, "Signing in…");
    try {
      const s = await api.login(token);
      input.value = "";
      await onSignedIn(s);
    } catch (err) {
      input.value = "";
      let text = `Sign-in failed: ${err.message}`;
      if (err.status === 403) text = "This is a tenant key: the console needs an operator key.";
      else if (err.status === 401) text = "This key is not valid (unknown, revoked or mistyped).";
      message(status, text, "error");
      input.focus();
    } finally {
      button.disabled = false;
    }
  });
  fill(root, form);
  if (note) message(status, note, "info");
  input.focus();
}
