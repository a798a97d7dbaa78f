// The API reference at /docs, drawn from the master's own /openapi.json (the
// document the router is built from), so it cannot drift from the server.
"use strict";

function el(tag, props, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

let schemas = {};
function refName(ref) { return ref.split("/").pop(); }
function resolve(s) { return s && s.$ref ? schemas[refName(s.$ref)] || {} : s || {}; }

// A schema's type in one line: `string (pattern ^[a-z]+$, ≤ 63)`, `[Task]`, `Job`.
function typeText(s) {
  if (!s) return "";
  if (s.$ref) return refName(s.$ref);
  for (const k of ["oneOf", "anyOf", "allOf"]) {
    if (s[k]) return s[k].map(typeText).filter(t => t && t !== "null").join(" | ");
  }
  let t = Array.isArray(s.type) ? s.type.filter(x => x !== "null").join("|") : s.type || "object";
  if (t === "array") t = "[" + typeText(s.items) + "]";
  if (s.enum) t += " one of " + s.enum.map(v => JSON.stringify(v)).join(", ");
  const limits = [];
  if (s.format) limits.push(s.format);
  if (s.pattern) limits.push("pattern " + s.pattern);
  if (s.minimum != null) limits.push("≥ " + s.minimum);
  if (s.maximum != null) limits.push("≤ " + s.maximum);
  if (s.minLength != null) limits.push("length ≥ " + s.minLength);
  if (s.maxLength != null) limits.push("length ≤ " + s.maxLength);
  if (s.maxItems != null) limits.push("≤ " + s.maxItems + " items");
  if (s.maxProperties != null) limits.push("≤ " + s.maxProperties + " entries");
  if (s.default !== undefined) limits.push("default " + JSON.stringify(s.default));
  return limits.length ? t + " (" + limits.join(", ") + ")" : t;
}

function fields(schema) {
  const s = resolve(schema);
  const props = s.properties || {};
  if (!Object.keys(props).length) return el("p", { class: "t", text: typeText(schema) });
  const required = new Set(s.required || []);
  const body = el("tbody");
  for (const [name, p] of Object.entries(props)) {
    body.append(el("tr", {},
      el("td", {}, el("code", { text: name + (required.has(name) ? "" : "?") })),
      el("td", { class: "t", text: typeText(p) }),
      el("td", { text: resolve(p).description || p.description || "" })));
  }
  return el("table", {}, el("thead", {}, el("tr", {}, el("th", { text: "Field" }), el("th", { text: "Type" }), el("th", { text: "" }))), body);
}

function operation(path, method, op) {
  const id = op.operationId || method + path;
  const sec = el("section", { class: "op", id });
  const head = el("h3", {}, el("span", { class: "m m-" + method, text: method.toUpperCase() }), path);
  if (op.security && op.security.length) head.append(el("span", { class: "lock", text: "bearer token" }));
  sec.append(head);
  if (op.summary) sec.append(el("p", { class: "d", text: op.summary }));
  if (op.description) sec.append(el("p", { class: "d muted", text: op.description }));
  const params = op.parameters || [];
  if (params.length) {
    const body = el("tbody");
    for (const p of params) {
      body.append(el("tr", {},
        el("td", {}, el("code", { text: p.name + (p.required ? "" : "?") })),
        el("td", { text: p.in }),
        el("td", { class: "t", text: typeText(p.schema) }),
        el("td", { text: p.description || "" })));
    }
    sec.append(el("table", {}, el("thead", {}, el("tr", {}, el("th", { text: "Parameter" }), el("th", { text: "In" }), el("th", { text: "Type" }), el("th", { text: "" }))), body));
  }
  const rb = op.requestBody && op.requestBody.content;
  if (rb) {
    const [ctype, media] = Object.entries(rb)[0];
    sec.append(el("p", { class: "muted", text: "Body (" + ctype + "): " + typeText(media.schema) }));
    sec.append(fields(media.schema));
  }
  const rbody = el("tbody");
  for (const [status, r] of Object.entries(op.responses || {})) {
    const content = r.content ? Object.entries(r.content)[0] : null;
    rbody.append(el("tr", {},
      el("td", {}, el("code", { text: status })),
      el("td", { text: r.description || "" }),
      el("td", { class: "t", text: content ? typeText(content[1].schema) + " · " + content[0] : "" })));
  }
  sec.append(el("table", {}, el("thead", {}, el("tr", {}, el("th", { text: "Status" }), el("th", { text: "Meaning" }), el("th", { text: "Body" }))), rbody));
  return sec;
}

async function main() {
  const doc = await (await fetch("/openapi.json")).json();
  schemas = (doc.components && doc.components.schemas) || {};
  document.getElementById("version").textContent = doc.info.version;
  const byTag = new Map((doc.tags || []).map(t => [t.name, { tag: t, ops: [] }]));
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const method of ["get", "post", "put", "delete"]) {
      const op = item[method];
      if (!op) continue;
      const tag = (op.tags && op.tags[0]) || "other";
      if (!byTag.has(tag)) byTag.set(tag, { tag: { name: tag }, ops: [] });
      byTag.get(tag).ops.push([path, method, op]);
    }
  }
  const docEl = document.getElementById("doc");
  const toc = document.getElementById("toc");
  docEl.replaceChildren();
  for (const { tag, ops } of byTag.values()) {
    if (!ops.length) continue;
    docEl.append(el("h2", { id: "tag-" + tag.name, text: tag.name }));
    if (tag.description) docEl.append(el("p", { class: "muted", text: tag.description }));
    toc.append(el("h4", { text: tag.name }));
    for (const [path, method, op] of ops) {
      const sec = operation(path, method, op);
      docEl.append(sec);
      toc.append(el("a", { href: "#" + sec.id, text: method.toUpperCase() + " " + path }));
    }
  }
  docEl.append(el("h2", { id: "schemas", text: "Schemas" }));
  toc.append(el("h4", {}, el("a", { href: "#schemas", text: "Schemas" })));
  for (const name of Object.keys(schemas).sort()) {
    const sec = el("section", { class: "op", id: "schema-" + name }, el("h3", { text: name }));
    if (schemas[name].description) sec.append(el("p", { class: "d", text: schemas[name].description }));
    sec.append(fields({ $ref: "#/components/schemas/" + name }));
    docEl.append(sec);
  }
}
main().catch(err => { document.getElementById("doc").textContent = "Could not read /openapi.json: " + err.message; });
