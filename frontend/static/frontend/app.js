/* ForgeryLab dashboard: the few interactive parts of the server-rendered pages.
 *
 * Every call goes to the platform's own REST API (/api/v1/) with the session cookie and the CSRF token;
 * API errors are shown in words next to the form that caused them. Charts are inline SVG drawn here
 * (bars, histogram) or the API's own PNGs (efficiency curve), so nothing is fetched from a CDN.
 * No framework and no build step: one file, loaded with `defer`, that wires up elements by data-js.
 */
"use strict";

const FL = (() => {
  const SVG = "http://www.w3.org/2000/svg";

  function cookie(name) {
    const hit = document.cookie.split("; ").find((c) => c.startsWith(name + "="));
    return hit ? decodeURIComponent(hit.slice(name.length + 1)) : "";
  }

  /* Turn an API error body into sentences: {detail, errors: {field: [..]}} or DRF's {field: [..]}. */
  function describe(body, status) {
    if (!body || typeof body !== "object") return `The server answered ${status}.`;
    const parts = [];
    if (body.detail) parts.push(String(body.detail));
    const fields = body.errors && typeof body.errors === "object" ? body.errors : body.detail ? {} : body;
    const flat = (v) => (Array.isArray(v) ? v.map(flat).join("; ") : v && typeof v === "object" ? JSON.stringify(v) : String(v));
    for (const [key, value] of Object.entries(fields)) {
      if (key === "code") continue;
      parts.push(key === "non_field_errors" ? flat(value) : `${key}: ${flat(value)}`);
    }
    return parts.join(" ") || `The server answered ${status}.`;
  }

  async function api(method, url, body) {
    const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
    if (method !== "GET") init.headers["X-CSRFToken"] = cookie("forgerylab_csrftoken");
    if (body instanceof FormData) init.body = body;
    else if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(url, init);
    } catch (err) {
      throw new Error("The server could not be reached: check your connection and try again.");
    }
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (err) { data = null; }
    if (!response.ok) {
      const error = new Error(describe(data, response.status));
      error.status = response.status;
      throw error;
    }
    return data;
  }

  function el(tag, attrs = {}, ...children) {
    const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined) continue;
      if (k === "text") node.textContent = v;
      else node.setAttribute(k, v);
    }
    for (const child of children) node.append(child);
    return node;
  }

  function show(target, message, kind = "error") {
    const node = typeof target === "string" ? document.getElementById(target) : target;
    if (!node) return;
    node.textContent = message || "";
    node.className = message ? kind : "";
  }

  const fmt = (v, digits = 3) => (v === null || v === undefined || Number.isNaN(v) ? "–" : Number(v).toFixed(digits));

  /* Grouped bars: groups [{label, values: {series: number|null}}], values in [0, max]. */
  function barChart(container, groups, { max = 1, title = "" } = {}) {
    const series = [...new Set(groups.flatMap((g) => Object.keys(g.values)))];
    const W = 520, H = 240, L = 40, B = 40, T = 20;
    const slot = (W - L - 10) / Math.max(groups.length, 1);
    const bar = Math.min(40, (slot - 10) / Math.max(series.length, 1));
    const svg = el("svg:svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title, class: "svgchart" });
    svg.append(el("svg:title", { text: title }));
    for (let i = 0; i <= 4; i++) {
      const y = T + (H - T - B) * (1 - i / 4);
      svg.append(el("svg:line", { x1: L, x2: W - 10, y1: y, y2: y, class: "grid" }));
      svg.append(el("svg:text", { x: L - 4, y: y + 4, "text-anchor": "end", class: "tick", text: fmt((max * i) / 4, 2) }));
    }
    groups.forEach((g, gi) => {
      const x0 = L + gi * slot + 5;
      series.forEach((s, si) => {
        const v = g.values[s];
        if (v === null || v === undefined) return;
        const h = ((H - T - B) * Math.max(0, Math.min(v, max))) / max;
        const rect = el("svg:rect", { x: x0 + si * bar, y: H - B - h, width: bar - 2, height: h, class: `series-${si % 6}` });
        rect.append(el("svg:title", { text: `${g.label} ${s}: ${fmt(v)}` }));
        svg.append(rect);
      });
      svg.append(el("svg:text", { x: x0 + (bar * series.length) / 2, y: H - B + 16, "text-anchor": "middle", class: "tick", text: g.label }));
    });
    const legend = el("div", { class: "legend" });
    series.forEach((s, si) => legend.append(el("span", { class: `key series-${si % 6}` }), el("span", { text: ` ${s}  ` })));
    container.replaceChildren(svg, legend);
  }

  /* Histogram from {edges, counts}; bins at or above `threshold` are drawn as selected. */
  function histogram(container, { edges, counts, threshold = null, title = "" }) {
    const W = 520, H = 220, L = 44, B = 34, T = 12;
    const top = Math.max(1, ...counts);
    const lo = edges[0], hi = edges[edges.length - 1], span = hi - lo || 1;
    const x = (v) => L + ((W - L - 10) * (v - lo)) / span;
    const svg = el("svg:svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title, class: "svgchart" });
    svg.append(el("svg:title", { text: title }));
    counts.forEach((c, i) => {
      const h = ((H - T - B) * c) / top;
      const selected = threshold !== null && edges[i + 1] > threshold;
      const rect = el("svg:rect", { x: x(edges[i]) + 1, y: H - B - h, width: Math.max(1, x(edges[i + 1]) - x(edges[i]) - 2), height: h, class: selected ? "series-1" : "series-0" });
      rect.append(el("svg:title", { text: `${fmt(edges[i])}–${fmt(edges[i + 1])}: ${c}` }));
      svg.append(rect);
    });
    svg.append(el("svg:text", { x: L - 4, y: T + 8, "text-anchor": "end", class: "tick", text: String(top) }));
    svg.append(el("svg:text", { x: L, y: H - 10, class: "tick", text: fmt(lo, 4) }));
    svg.append(el("svg:text", { x: W - 10, y: H - 10, "text-anchor": "end", class: "tick", text: fmt(hi, 4) }));
    if (threshold !== null) svg.append(el("svg:line", { x1: x(threshold), x2: x(threshold), y1: T, y2: H - B, class: "threshold" }));
    container.replaceChildren(svg);
  }

  /* A grayscale heatmap PNG -> a coloured, transparent overlay: weak is clear and yellow, strong is opaque red.
   With ``tint`` ([r, g, b]) a mask PNG -> that colour where marked, clear elsewhere. */
  function colorize(src, tint = null) {
    return new Promise((resolve, reject) => {
      const img = new Image();
      img.onload = () => {
        const canvas = document.createElement("canvas");
        canvas.width = img.naturalWidth;
        canvas.height = img.naturalHeight;
        const ctx = canvas.getContext("2d");
        ctx.drawImage(img, 0, 0);
        const pixels = ctx.getImageData(0, 0, canvas.width, canvas.height);
        const d = pixels.data;
        for (let i = 0; i < d.length; i += 4) {
          const v = d[i] / 255;  // the heatmap is gray: R == G == B
          if (tint) {  // a mask: one colour, half transparent where marked
            [d[i], d[i + 1], d[i + 2]] = tint;
            d[i + 3] = Math.round(160 * v);
            continue;
          }
          d[i] = 255;
          d[i + 1] = Math.round(230 * (1 - v));  // yellow (weak) to red (strong)
          d[i + 2] = 0;
          d[i + 3] = Math.round(255 * Math.min(1, v * 1.5));
        }
        ctx.putImageData(pixels, 0, 0);
        resolve(canvas.toDataURL("image/png"));
      };
      img.onerror = () => reject(new Error("The heatmap image could not be decoded."));
      img.src = src;
    });
  }

  function table(headers, rows) {
    const head = el("tr", {}, ...headers.map((h) => el("th", { scope: "col", text: h })));
    const body = rows.map((r) => el("tr", {}, ...r.map((c) => (c instanceof Node ? el("td", {}, c) : el("td", { text: c })))));
    return el("table", {}, el("thead", {}, head), el("tbody", {}, ...body));
  }

  const MASK_TINT = [0, 120, 255];

  return { MASK_TINT, api, describe, el, show, fmt, barChart, histogram, table, colorize };
})();
