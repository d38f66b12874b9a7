// DOM helpers. Data from the API is only ever placed with textContent / attributes, never
// parsed as HTML, so a payload preview or an error text cannot inject markup.

/** Create an element: h("td", {class: "num"}, "12") ; children may be strings, nodes, arrays. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replace all children of `el`. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/**
 * Bring `tbody` in line with `items` without rebuilding rows that did not change, so that
 * focus, checkbox state and text selection survive each poll. `key(item)` names a row;
 * `row(item)` builds its <tr>. A row is rebuilt only when its item's JSON changed.
 */
export function syncRows(tbody, items, key, row) {
  const old = new Map();
  for (const tr of tbody.children) if (tr.dataset.key !== undefined) old.set(tr.dataset.key, tr);
  const wanted = [];
  for (const item of items) {
    const k = String(key(item));
    const sig = JSON.stringify(item);
    let tr = old.get(k);
    if (!tr || tr.dataset.sig !== sig) {
      const fresh = row(item);
      fresh.dataset.key = k;
      fresh.dataset.sig = sig;
      if (tr) tr.replaceWith(fresh);
      tr = fresh;
    }
    old.delete(k);
    wanted.push(tr);
  }
  for (const tr of old.values()) tr.remove();
  for (const tr of [...tbody.children]) if (tr.dataset.key === undefined) tr.remove();
  wanted.forEach((tr, i) => {
    if (tbody.children[i] !== tr) tbody.insertBefore(tr, tbody.children[i] || null);
  });
}

/** A table with a caption and column headers; returns {table, tbody}. */
export function table(caption, columns, { empty = "Nothing to show.", narrow = false } = {}) {
  const tbody = h("tbody");
  const table = h(
    "table",
    {},
    h("caption", {}, caption),
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)))),
    tbody,
  );
  const none = h("p", { class: "empty", hidden: true }, empty);
  const wrap = h("div", { class: narrow ? "table-wrap narrow" : "table-wrap" }, table, none);
  return {
    wrap,
    table,
    tbody,
    sync(items, key, row) {
      syncRows(tbody, items, key, row);
      none.hidden = items.length > 0;
      table.hidden = items.length === 0;
    },
  };
}

/** A status badge: the word is always written out, the colour only repeats it. */
export function badge(text, kind = text) {
  return h("span", { class: `badge badge-${String(kind).replace(/[^a-z0-9_-]/gi, "")}` }, text);
}

export function num(n) {
  return n === null || n === undefined ? "–" : Number(n).toLocaleString("en");
}

export function seconds(s) {
  if (s === null || s === undefined) return "–";
  const v = Number(s);
  if (v < 10) return `${v.toFixed(1)} s`;
  if (v < 120) return `${Math.round(v)} s`;
  if (v < 7200) return `${Math.round(v / 60)} min`;
  return `${(v / 3600).toFixed(1)} h`;
}

/** A UTC time from an ISO string or from seconds since the epoch ("–" when absent). */
export function when(value) {
  if (value === null || value === undefined || value === "") return "–";
  const d = typeof value === "number" ? new Date(value * 1000) : new Date(value);
  return Number.isNaN(d.getTime()) ? String(value) : d.toISOString().replace("T", " ").slice(0, 19) + "Z";
}

/** Say `text` politely to screen readers (the #announce live region). */
export function announce(text) {
  const region = document.getElementById("announce");
  if (!region) return;
  region.textContent = "";
  // a new text node after a tick, so that repeating the same message is announced again
  setTimeout(() => {
    region.textContent = text;
  }, 50);
}

/**
 * Ask before an action: the <dialog id="confirm"> as a modal (the browser keeps focus in it
 * and Escape cancels). Resolves true only when the operator pressed the confirm button.
 */
export function confirmAction(title, text, okLabel) {
  const dialog = document.getElementById("confirm");
  const opener = document.activeElement;
  dialog.querySelector("#confirm-title").textContent = title;
  dialog.querySelector("#confirm-text").textContent = text;
  dialog.querySelector("#confirm-ok").textContent = okLabel;
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => {
        if (opener && opener.isConnected) opener.focus();
        resolve(dialog.returnValue === "ok");
      },
      { once: true },
    );
    dialog.showModal();
    dialog.querySelector("#confirm-cancel").focus();
  });
}

/**
 * A labelled generation picker; `onChange(n)` when the operator picks another one
 * (`null` for "all generations" when `allowAll`). `update(gens, selected)` refreshes it.
 */
export function generationPicker(id, { allowAll = false, onChange }) {
  const select = h("select", { id, name: "generation" });
  const label = h("label", { for: id }, "Generation");
  select.addEventListener("change", () => onChange(select.value === "" ? null : Number(select.value)));
  const update = (gens, sel) => {
    const values = [...(allowAll ? [""] : []), ...gens.map((g) => String(g))];
    const have = [...select.options].map((o) => o.value);
    if (values.join(",") !== have.join(",")) {
      fill(
        select,
        allowAll ? h("option", { value: "" }, "all generations") : null,
        gens.map((g) => h("option", { value: g }, `generation ${g}`)),
      );
    }
    select.value = sel === null || sel === undefined ? "" : String(sel);
  };
  return { el: h("div", { class: "field inline" }, label, select), update };
}

/**
 * The generation a per-generation view shows: `?generation=N` in the hash, else the current
 * one. Returns {selected, generations, info} from /api/operator/generations (`info` is the
 * selected generation's entry).
 */
export async function pickGeneration(api, params, { allowAll = false } = {}) {
  const data = await api.get("/api/operator/generations");
  const gens = (data.generations || []).map((g) => g.generation).sort((a, b) => b - a);
  const raw = params.get("generation");
  let selected = raw === null || raw === "" ? (allowAll ? null : data.current) : Number(raw);
  if (selected !== null && !Number.isInteger(selected)) selected = data.current;
  const info = (data.generations || []).find((g) => g.generation === selected) || null;
  return { selected, generations: gens, info };
}

/** An inline message (error or result) for a view; `role="alert"` only for errors. */
export function message(el, text, kind = "info") {
  if (!text) {
    fill(el);
    el.hidden = true;
    return;
  }
  el.hidden = false;
  el.className = `message message-${kind}`;
  el.setAttribute("role", kind === "error" ? "alert" : "status");
  el.textContent = text;
}
