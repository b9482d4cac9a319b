/* ForgeryLab dashboard, "Workers" page: polls the operations API and redraws queues, workers and rounds.
 *
 * GET /api/v1/operations/queues/ (queue depths, read from Redis on every call) and
 * GET /api/v1/operations/workers/ (the workers' own answers, cached a few seconds by the server), every
 * `data-poll-ms` milliseconds while the tab is visible. A failed poll (broker down: 503) shows the API's
 * sentence and keeps the last good view; the next successful poll clears it. Uses app.js's FL helpers.
 */
"use strict";

(() => {
  const { api, el, show } = FL;

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    const s = Math.floor(seconds);
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
    return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
  }

  function renderQueues(body, data) {
    const max = Math.max(1, ...data.queues.map((q) => q.depth));
    const rows = data.queues.map((q) => {
      const consumers = q.consumers.length
        ? el("td", { class: "consumers", text: q.consumers.join(", ") })
        : el("td", { class: "consumers" }, el("span", { class: q.depth ? "warn" : "muted", text: "no worker consumes this queue" }));
      return el("tr", { "data-queue": q.name },
        el("th", { scope: "row" }, el("code", { text: q.name })),
        el("td", { class: "depth", text: String(q.depth) }),
        el("td", { class: "bar-col" }, el("meter", { min: "0", max: String(max), value: String(q.depth), "aria-label": `${q.name}: ${q.depth} waiting`, text: String(q.depth) })),
        el("td", { class: "unacked", text: String(q.unacked) }),
        consumers);
    });
    if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: "5", class: "empty", text: "No queue." })));
    body.replaceChildren(...rows);
  }

  function workerCard(w) {
    const counts = [
      ["queues", w.queues.join(", ") || "none"], ["pool", `${w.pool} × ${w.concurrency ?? "?"}`], ["pid", String(w.pid ?? "–")],
      ["up for", duration(w.uptime_s)], ["processed", String(w.processed_total ?? "–")], ["prefetched", String(w.reserved ?? "–")],
    ];
    const tasks = w.active.map((t) => el("tr", { "data-task": t.id },
      el("td", {}, el("code", { text: t.name })), el("td", {}, el("code", { text: t.args })),
      el("td", { text: t.queue }), el("td", { text: duration(t.runtime_s) })));
    if (!tasks.length) tasks.push(el("tr", {}, el("td", { colspan: "4", class: "empty", text: "Idle." })));
    const head = el("tr", {}, ...["Running task", "Arguments", "Queue", "Running for"].map((h) => el("th", { scope: "col", text: h })));
    return el("li", { class: "card worker", "data-hostname": w.hostname },
      el("h3", { text: `${w.hostname} ` }, el("span", { class: `state status-${w.status}`, text: w.status === "busy" ? `busy: not answering, heartbeat ${w.heartbeat_age_s} s ago` : "online" })),
      el("dl", { class: "counts" }, ...counts.map(([k, v]) => el("div", {}, el("dt", { text: k }), el("dd", { text: v })))),
      el("table", { class: "tasks" }, el("thead", {}, head), el("tbody", {}, ...tasks)));
  }

  function renderWorkers(list, count, data) {
    const cards = data.workers.map(workerCard);
    if (!cards.length) {
      cards.push(el("li", { class: "card empty" }, "No worker answered. Start one with ",
        el("code", { text: "celery -A workers.celery_app worker -Q cpu,default" }),
        "; a busy solo-pool worker is shown from its heartbeat."));
    }
    list.replaceChildren(...cards);
    count.textContent = `(${data.workers.length} online)`;
  }

  function renderRounds(body, data) {
    const rows = data.rounds.map((r) => {
      const holders = r.workers.length
        ? el("td", {}, ...r.workers.flatMap((h, i) => [`${i ? ", " : ""}${h.hostname} `, el("small", { class: "muted", text: h.task })]))
        : el("td", {}, el("span", { class: "muted", text: r.lock_held ? "not answering (busy)" : "none" }));
      return el("tr", { "data-round": String(r.id) },
        el("th", { scope: "row" }, el("a", { href: `/rounds/${r.id}/`, text: `#${r.id}` })),
        el("td", { text: `${r.dataset} (no. ${r.number})` }),
        el("td", {}, el("span", { class: `state state-${r.state}`, text: r.phase })),
        el("td", { text: r.lock_held ? "held by a worker" : "free" }),
        holders);
    });
    if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: "5", class: "empty", text: "No live round." })));
    body.replaceChildren(...rows);
  }

  function operationsPage(root) {
    const period = Math.max(1000, Number(root.getAttribute("data-poll-ms")) || 3000);
    const queuesBody = root.querySelector("#ops-queues tbody");
    const roundsBody = root.querySelector("#ops-rounds tbody");
    const workerList = root.querySelector("#ops-workers");
    const workerCount = root.querySelector("#ops-worker-count");
    const updated = root.querySelector("#ops-updated");
    let timer = null;
    let inflight = false;

    async function poll() {
      if (inflight) return;
      inflight = true;
      timer = null;
      try {
        const [queues, workers] = await Promise.all([
          api("GET", "/api/v1/operations/queues/"),
          api("GET", "/api/v1/operations/workers/"),
        ]);
        renderQueues(queuesBody, queues);
        renderWorkers(workerList, workerCount, workers);
        renderRounds(roundsBody, workers);
        updated.textContent = `workers asked at ${workers.fetched_at.slice(11, 19)} UTC${workers.stale ? " (stale)" : ""}`;
        show("ops-error", "");
        root.setAttribute("data-polled", String(Number(root.getAttribute("data-polled") || 0) + 1));
      } catch (err) {
        show("ops-error", `${err.message} (retrying every ${period / 1000} s)`);
      } finally {
        inflight = false;
      }
      if (!document.hidden && timer === null) timer = setTimeout(poll, period);
    }

    document.addEventListener("visibilitychange", () => {
      if (!document.hidden && timer === null && !inflight) poll();
    });
    timer = setTimeout(poll, period);
  }

  document.addEventListener("DOMContentLoaded", () => {
    const root = document.querySelector("[data-js=operations]");
    if (root) operationsPage(root);
  });
})();
