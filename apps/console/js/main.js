// The console's shell: session check, login, hash routing between views, and polling.
// Each view module exports `title` and `mount(root, ctx)`, which returns
// `{refresh, interval}`; the shell calls refresh() every `interval` ms while the view is open
// (no page reloads), and stops when the operator leaves it or the tab is hidden.

import * as api from "./api.js";
import { announce, fill, h } from "./dom.js";
import * as login from "./views/login.js";
import * as overview from "./views/overview.js";
import * as generations from "./views/generations.js";
import * as workers from "./views/workers.js";
import * as dead from "./views/dead.js";
import * as modules from "./views/modules.js";
import * as tenants from "./views/tenants.js";
import * as agent from "./views/agent.js";
import * as audit from "./views/audit.js";

const VIEWS = { overview, generations, workers, dead, modules, tenants, agent, audit };
const main = document.getElementById("main");
const nav = document.getElementById("nav");
const who = document.getElementById("who");

let current = null; // {name, handle, timer, seq}
let signedIn = false;

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [name, query = ""] = raw.split("?");
  return { name: VIEWS[name] ? name : "overview", params: new URLSearchParams(query) };
}

function stop() {
  if (current && current.timer) clearTimeout(current.timer);
  if (current && current.handle && current.handle.unmount) current.handle.unmount();
  current = null;
}

function stamp() {
  const el = document.getElementById("updated");
  if (el) el.textContent = `Last update ${new Date().toLocaleTimeString("en-GB")}.`;
}

async function tick(entry) {
  if (current !== entry) return;
  try {
    await entry.handle.refresh();
    stamp();
    entry.failing = false;
  } catch (err) {
    if (err.status === 401) return; // api.js announced "spectral:session-ended"
    if (!entry.failing) announce(`Update failed: ${err.message}`);
    entry.failing = true;
    entry.handle.error?.(err);
  }
  if (current === entry && entry.handle.interval) {
    entry.timer = setTimeout(() => {
      if (document.hidden) entry.pending = true;
      else tick(entry);
    }, entry.handle.interval);
  }
}

document.addEventListener("visibilitychange", () => {
  if (!document.hidden && current && current.pending) {
    current.pending = false;
    tick(current);
  }
});

function markNav(name) {
  for (const a of nav.querySelectorAll("a")) {
    if (a.getAttribute("href") === `#/${name}`) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

function route({ focus = true } = {}) {
  if (!signedIn) return;
  const { name, params } = parseHash();
  stop();
  const view = VIEWS[name];
  document.title = `${view.title} · spectral console`;
  markNav(name);
  const heading = h("h1", { tabindex: "-1" }, view.title);
  const body = h("div", { class: "view", id: `view-${name}` });
  fill(main, heading, body);
  const ctx = {
    params,
    /** Change this view's query (e.g. the generation) without a reload. */
    setParams(next) {
      const q = new URLSearchParams(next).toString();
      history.replaceState(null, "", `#/${name}${q ? `?${q}` : ""}`);
      route({ focus: false });
    },
  };
  const entry = { name, handle: view.mount(body, ctx), timer: null };
  current = entry;
  if (focus) heading.focus();
  tick(entry);
}

function showLogin(note) {
  stop();
  nav.hidden = true;
  who.hidden = true;
  document.title = "Sign in · spectral console";
  login.mount(main, {
    note,
    async onSignedIn(s) {
      enter(s);
      announce(`Signed in as ${s.operator}.`);
    },
  });
}

function enter(s) {
  signedIn = true;
  nav.hidden = false;
  who.hidden = false;
  document.getElementById("who-name").textContent = s.operator;
  route();
}

document.getElementById("logout").addEventListener("click", async () => {
  try {
    await api.logout();
  } catch {
    // the session may already be gone; the login form is what matters
  }
  signedIn = false;
  announce("Signed out.");
  showLogin();
});

window.addEventListener("hashchange", () => route());
window.addEventListener("spectral:session-ended", () => {
  if (!signedIn) return;
  signedIn = false;
  announce("Your session ended; sign in again.");
  showLogin("Your session ended; sign in again.");
});

async function boot() {
  let s = null;
  try {
    s = await api.session();
  } catch (err) {
    fill(main, h("p", { class: "message message-error", role: "alert" }, `The API did not answer: ${err.message}`));
    return;
  }
  if (s) enter(s);
  else showLogin();
}

boot();
