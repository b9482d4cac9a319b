/* ForgeryLab dashboard: per-page behaviour, wired up by data-js attributes (see app.js for helpers). */
"use strict";

(() => {
  const { api, el, show, fmt, barChart, histogram, table, colorize, MASK_TINT } = FL;
  const $ = (sel, root = document) => root.querySelector(sel);
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const busy = (button, on) => { if (button) { button.disabled = on; button.setAttribute("aria-busy", on ? "true" : "false"); } };

  /* ----- datasets: create + import with live progress ----- */
  const VIDEO_FORMATS = ["ffpp-video", "celebdf", "dfdc", "video-folder"];

  /* Video import progress: counts from the job's `videos` block, then the first failures with reasons. */
  function renderVideoProgress(job, counts, failures) {
    const v = job.videos;
    if (!v) { counts.hidden = true; failures.replaceChildren(); return; }
    const items = [
      ["videos done", `${v.done} / ${v.total}`], ["failed", v.failed], ["running", v.running], ["pending", v.pending],
      ["frames", v.frames], ["faces", v.faces], ["new samples", v.samples],
      ["already imported", v.already_imported], ["entries rejected", v.entries_rejected],
    ];
    counts.replaceChildren(...items.map(([k, value]) => el("div", { "data-count": k }, el("dt", { text: k }), el("dd", { text: String(value) }))));
    counts.hidden = false;
    const entries = (job.errors || []).filter((e) => e.kind === "entry");
    const parts = [];
    if (v.failures.length) {
      parts.push(el("h3", { text: `Failed videos (${v.failed})` }));
      parts.push(el("ul", { class: "failures", id: "import-failed-videos" }, ...v.failures.map((f) => el("li", {}, el("code", { text: f.external_id }), `: ${f.reason}`))));
    }
    if (entries.length) {
      parts.push(el("h3", { text: `Rejected entries (${v.entries_rejected})` }));
      parts.push(el("ul", { class: "failures", id: "import-rejected" }, ...entries.slice(0, 20).map((e) => el("li", {}, el("code", { text: e.field || "source" }), `${e.row ? ` line ${e.row}` : ""}: ${e.message}`))));
    }
    failures.replaceChildren(...parts);
  }

  function importForm(form) {
    const formatSelect = $("#import-format", form);
    const videoOptions = $("#video-options", form);
    const syncOptions = () => { videoOptions.hidden = !VIDEO_FORMATS.includes(formatSelect.value); };
    formatSelect.addEventListener("change", syncOptions);
    syncOptions();
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const data = new FormData(form);
      const button = $("button[type=submit]", form);
      const bar = $("#import-progress");
      const counts = $("#import-videos");
      const failures = $("#import-failures");
      busy(button, true);
      show("import-status", "Starting the import…", "muted");
      try {
        const name = data.get("name").trim();
        const format = data.get("format");
        const body = { source: data.get("source").trim(), format };
        if (VIDEO_FORMATS.includes(format)) {
          for (const key of ["frames", "size", "shard_size"]) {
            const value = data.get(key);
            if (value !== null && value !== "") body[key] = Number(value);
          }
          const levels = (data.get("compression") || "").split(/[\s,]+/).filter(Boolean);
          if (levels.length && format === "ffpp-video") body.compression = levels;
        }
        const list = await api("GET", "/api/v1/datasets/?page_size=500");
        let dataset = (list.results || []).find((d) => d.name === name);
        if (!dataset) dataset = await api("POST", "/api/v1/datasets/", { name, description: data.get("description") || "" });
        let job = await api("POST", `/api/v1/datasets/${dataset.id}/imports/`, body);
        bar.hidden = false;
        while (!["succeeded", "failed"].includes(job.status)) {
          bar.value = job.progress || 0;
          const v = job.videos;
          show("import-status", v ? `Import ${job.status}: ${v.done + v.failed} of ${v.total || "?"} videos processed.` : `Import ${job.status}: ${job.processed_rows} of ${job.total_rows || "?"} rows.`, "muted");
          renderVideoProgress(job, counts, failures);
          await sleep(700);
          job = await api("GET", `/api/v1/imports/${job.id}/`);
        }
        bar.value = job.progress;
        renderVideoProgress(job, counts, failures);
        if (job.status === "failed") {
          const first = job.errors.slice(0, 3).map((e) => (e.message ? `${e.field || "source"}: ${e.message}` : JSON.stringify(e))).join(" ");
          throw new Error(`The import failed: ${job.message} ${job.videos ? "" : first}`.trim());
        }
        if (job.videos) show("import-status", `Imported: ${job.message}. Reload to see the dataset.`, job.videos.failed ? "muted" : "ok");
        else show("import-status", `Imported: ${job.inserted_rows} new samples, ${job.existing_rows} already there, ${job.error_count} rejected. Reload to see the dataset.`, "ok");
      } catch (err) {
        show("import-status", err.message);
      } finally {
        busy(button, false);
      }
    });
  }

  /* ----- rounds: launch form ----- */
  function launchForm(form) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const data = new FormData(form);
      const problems = [];
      for (const input of form.querySelectorAll("input[type=number]")) {
        if (!input.checkValidity()) problems.push(`${form.querySelector(`label[for=${input.id}]`).textContent}: ${input.validationMessage}`);
      }
      const config = { detectors: data.getAll("detectors"), strategy: data.get("strategy"), labeling: data.get("labeling"), scoring: data.get("scoring") };
      if (!config.detectors.length) problems.push("Pick at least one detector.");
      for (const key of ["epochs", "retrain_epochs", "image_size", "batch_size", "budget_count"]) {
        const value = data.get(key);
        if (value !== null && value !== "") config[key] = Number(value);
      }
      if (data.get("weights")) config.detector_config = { sjedd: { weights: data.get("weights") } };
      if (data.get("preset")) {
        // A recipe decides its own detectors, epochs and sizes: the form's defaults must not override it.
        config.preset = data.get("preset");
        for (const key of ["detectors", "epochs", "retrain_epochs", "image_size"]) delete config[key];
      }
      const totalPercent = data.get("budget_total_percent");
      if (totalPercent !== null && totalPercent !== "") config.budget_total = Number(totalPercent) / 100;
      const extra = (data.get("extra") || "").trim();
      if (extra) {
        try {
          const parsed = JSON.parse(extra);
          if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) throw new Error();
          Object.assign(config, parsed);
        } catch (err) {
          problems.push("Further options must be a JSON object, e.g. {\"seed\": 1}.");
        }
      }
      if (problems.length) return show("launch-errors", problems.join(" "));
      show("launch-errors", "");
      const button = $("button[type=submit]", form);
      busy(button, true);
      try {
        const round = await api("POST", "/api/v1/rounds/", { dataset: Number(data.get("dataset")), config });
        window.location.assign(`/rounds/${round.id}/`);
      } catch (err) {
        show("launch-errors", `The round was not launched. ${err.message}`);
        busy(button, false);
      }
    });
  }

  /* ----- round detail: polling progress, metrics, histogram, selection ----- */
  const TERMINAL = ["done", "failed", "cancelled"];

  function renderPhases(round) {
    const phases = round.progress.phases || {};
    for (const row of document.querySelectorAll("#phases tr[data-phase]")) {
      const p = phases[row.dataset.phase];
      let status = "waiting";
      if (p && p.finished_at) status = "done";
      else if (p && p.started_at) status = round.state === "failed" && round.progress.failed_phase === row.dataset.phase ? "failed" : TERMINAL.includes(round.state) ? "stopped" : "running";
      else if (round.state === "done" && row.dataset.phase === "selecting") status = "done";
      $(".phase-status", row).textContent = status;
      row.className = `phase-${status}`;
      $(".phase-seconds", row).textContent = p && p.seconds !== undefined ? fmt(p.seconds, 1) : "";
      $(".phase-attempts", row).textContent = p && p.attempts ? p.attempts : "";
    }
    const extra = [];
    const training = round.progress.training;
    if (training && typeof training === "object") extra.push(`training: ${Object.entries(training).map(([k, v]) => `${k} ${typeof v === "number" ? v : JSON.stringify(v)}`).join(", ")}`);
    const budget = round.budget;
    if (budget && typeof budget === "object") extra.push(`mask budget: ${budget.spent} of ${budget.total} spent (${fmt(100 * budget.total_fraction, 1)}% of ${budget.training_pool} training samples), ${budget.remaining} remaining; this round ${budget.round}`);
    $("#round-detail-progress").replaceChildren(...extra.map((t) => el("p", { class: "muted", text: t })));
    const events = [];
    for (const [name, p] of Object.entries(phases)) {
      if (p.started_at) events.push([p.started_at, `${name} started${p.attempts > 1 ? ` (attempt ${p.attempts})` : ""}`]);
      if (p.finished_at) events.push([p.finished_at, `${name} finished after ${fmt(p.seconds, 1)} s (compute ${fmt(p.compute_seconds, 1)} s)`]);
    }
    if (round.progress.failed_phase) events.push([round.finished_at || "", `failed in ${round.progress.failed_phase}`]);
    events.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    $("#round-log").replaceChildren(...(events.length ? events.map(([t, text]) => el("li", {}, el("time", { datetime: t, text: t ? new Date(t).toLocaleTimeString() : "" }), ` ${text}`)) : [el("li", { class: "empty", text: "Nothing has happened yet." })]));
    const annotation = round.annotation;
    $("#round-annotation").replaceChildren(...(annotation ? [el("p", { text: `Annotation: ${Object.entries(annotation).map(([k, v]) => `${k} ${v === null ? "–" : v}`).join(", ")}` })] : []));
    renderDraftQuality(round);
  }

  /* Draft quality: IoU of the model's draft masks with the submitted and the ground-truth masks. */
  function renderDraftQuality(round) {
    const quality = round.draft_quality;
    const box = $("#round-draft-quality");
    if (!quality) {
      box.replaceChildren(...(round.state === "annotating" ? [el("p", { class: "muted", text: "Draft quality: measured when annotation ends." })] : []));
      return;
    }
    const skipped = (s) => (s.skipped ? `${s.skipped} (${Object.entries(s.skip_reasons).map(([k, n]) => `${k.replaceAll("_", " ")} ${n}`).join(", ")})` : "0");
    const row = (label, s, pending) => (s ? [label, String(s.count), fmt(s.mean), fmt(s.median), skipped(s)] : [label, "–", "–", "–", pending]);
    box.replaceChildren(
      el("p", { text: `Draft quality: IoU of the model's draft masks, ${quality.selected} selected samples` }),
      table(["draft vs", "compared", "mean IoU", "median IoU", "skipped"], [
        row("submitted mask", quality.submitted, ""),
        row("ground truth", quality.ground_truth, "after evaluation"),
      ]),
    );
  }

  function renderMetrics(round) {
    const metrics = round.metrics || {};
    const names = Object.keys(metrics).filter((k) => metrics[k] && typeof metrics[k] === "object");
    if (!names.length) return;
    const groups = [];
    for (const [key, label] of [["auc", "AUC"], ["video_auc", "video AUC"]]) {
      for (const split of ["seen", "unseen"]) {
        const values = {};
        for (const name of names) if (metrics[name][split] && metrics[name][split][key] !== undefined) values[name] = metrics[name][split][key];
        if (Object.values(values).some((v) => v !== null && v !== undefined)) groups.push({ label: `${label} ${split}`, values });
      }
    }
    const chart = $("#metrics-chart");
    if (groups.length) barChart(chart, groups, { title: `Test AUC per detector (frames; videos when the samples come from videos), round ${round.number}` });
    else chart.replaceChildren(el("p", { class: "empty", text: "Metrics were recorded but no AUC is defined (one class only in the test split?)." }));
    const keys = [...new Set(names.flatMap((n) => Object.keys(metrics[n].seen || {})))];
    const rows = names.map((n) => [n, ...keys.map((k) => fmt((metrics[n].seen || {})[k])), String(metrics[n].masks_used ?? "–")]);
    $("#metrics-table").replaceChildren(table(["detector", ...keys.map((k) => `${k} (seen)`), "masks used"], rows));
  }

  async function renderSelection(roundId) {
    try {
      const hist = await api("GET", `/api/v1/rounds/${roundId}/uncertainty-histogram/`);
      if (hist.count) histogram($("#histogram-chart"), { ...hist, threshold: hist.selected_min, title: `Pool uncertainty (${hist.strategy}), ${hist.count} samples, ${hist.selected_count} selected` });
      else $("#histogram-chart").replaceChildren(el("p", { class: "empty", text: "No pool scores are stored for this round (in-process scoring keeps only the selected samples' scores)." }));
      const page = await api("GET", `/api/v1/rounds/${roundId}/selection/?page_size=100`);
      if (!page.results.length) return;
      const strategies = [...new Set(page.results.flatMap((s) => Object.keys(s.scores || {})))];
      const thumb = (s) => {
        const mask = el("img", { class: "overlay mask", alt: "" });
        colorize(`/samples/${s.sample}/mask.png`, MASK_TINT).then((url) => (mask.src = url), () => mask.remove());  // no mask yet
        return el("div", { class: "stack thumb" }, el("img", { src: `/api/v1/samples/${s.sample}/media/`, alt: `Sample ${s.external_id}` }), mask);
      };
      const rows = page.results.map((s) => [String(s.rank), thumb(s), s.external_id, s.label, fmt(s.score), ...strategies.map((k) => fmt(s.scores[k]))]);
      $("#selection").replaceChildren(el("p", { text: `${page.count} samples selected for annotation (collected masks shown over the image).` }), table(["rank", "image", "sample", "label", "score", ...strategies], rows));
    } catch (err) {
      show($("#histogram-chart"), err.message);
    }
  }

  /* Reload a chart PNG past the browser cache (the API refuses unknown query parameters). */
  async function refreshImage(img, url) {
    try {
      const response = await fetch(url, { credentials: "same-origin", cache: "reload" });
      if (!response.ok) throw new Error(`The chart could not be drawn (${response.status}).`);
      img.src = URL.createObjectURL(await response.blob());
    } catch (err) {
      img.replaceWith(el("p", { class: "error", text: err.message }));
    }
  }

  function roundPage(root) {
    const id = root.dataset.round;
    let selectionShown = false;
    let lastState = null;
    async function tick() {
      let round;
      try {
        round = await api("GET", `/api/v1/rounds/${id}/`);
      } catch (err) {
        show("round-live", `Could not refresh: ${err.message} Retrying…`);
        return setTimeout(tick, 3000);
      }
      const state = $("#round-state");
      state.textContent = round.state;
      state.className = `state state-${round.state}`;
      show("round-error", round.error || "");
      renderPhases(round);
      renderMetrics(round);
      for (const button of root.querySelectorAll("[data-action]")) {
        const action = button.dataset.action;
        button.hidden = !((action === "close-annotation" && round.state === "annotating") || (action === "retry" && round.state === "failed") || (action === "cancel" && !TERMINAL.includes(round.state)));
      }
      const phases = round.progress.phases || {};
      if (!selectionShown && ((phases.scoring && phases.scoring.finished_at) || TERMINAL.includes(round.state))) {
        selectionShown = true;
        renderSelection(id);
      }
      if (round.state !== lastState && round.state === "done") {
        refreshImage($("#efficiency"), `/api/v1/datasets/${round.dataset}/efficiency/?image=true`);
      }
      lastState = round.state;
      const live = TERMINAL.includes(round.state) ? `finished ${round.finished_at || ""}` : `live, updated ${new Date().toLocaleTimeString()}`;
      $("#round-live").textContent = live;
      root.dataset.state = round.state;
      if (!TERMINAL.includes(round.state)) setTimeout(tick, 1000);
    }
    for (const button of root.querySelectorAll("[data-action]")) {
      button.addEventListener("click", async () => {
        const action = button.dataset.action;
        if (action === "cancel" && !window.confirm("Cancel this round? Work in progress stops.")) return;
        busy(button, true);
        try {
          await api("POST", `/api/v1/rounds/${id}/${action}/`);
          show("round-error", "");
          if (action === "retry") tick();
        } catch (err) {
          show("round-error", `${button.textContent} failed: ${err.message}`);
        } finally {
          busy(button, false);
        }
      });
    }
    tick();
  }

  /* ----- gallery: mask overlays, heatmaps from a detector version ----- */
  function gallery() {
    const toggle = $("#show-masks");
    if (toggle) {
      toggle.addEventListener("change", () => {
        for (const mask of document.querySelectorAll(".overlay.mask")) {
          mask.hidden = !toggle.checked;
          if (toggle.checked && !mask.dataset.tinted) {
            mask.dataset.tinted = "1";
            colorize(mask.src, MASK_TINT).then((url) => (mask.src = url), () => mask.remove());
          }
        }
      });
    }
    const button = $("[data-js=heatmaps]");
    if (!button) return;
    button.addEventListener("click", async () => {
      const version = $("#heatmap-version").value;
      busy(button, true);
      let done = 0;
      const tiles = [...document.querySelectorAll(".tile")];
      try {
        for (const tile of tiles) {
          show("heatmap-status", `Computing heatmaps: ${done} of ${tiles.length}…`, "muted");
          const blob = await (await fetch(tile.dataset.media, { credentials: "same-origin" })).blob();
          const form = new FormData();
          form.append("images", blob, `sample-${tile.dataset.sample}.png`);
          form.append("mode", "crop");
          const out = await api("POST", `/api/v1/detectors/${encodeURIComponent(version)}/predict/`, form);
          const face = out.results[0].faces[0];
          const heat = $(".overlay.heat", tile);
          heat.src = await colorize(`data:image/png;base64,${face.heatmap_png}`);
          heat.hidden = false;
          $(".prob", tile).textContent = `P(fake) ${fmt(face.prob_fake)}`;
          done += 1;
        }
        show("heatmap-status", `Heatmaps from ${version} on ${done} samples.`, "ok");
      } catch (err) {
        show("heatmap-status", `Heatmaps stopped after ${done}: ${err.message}`);
      } finally {
        busy(button, false);
      }
    });
  }

  /* ----- detectors: compare, export, production alias ----- */
  function detectorsPage(form) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const tags = new FormData(form).getAll("tags");
      if (tags.length < 2) return show("compare-errors", "Tick two or more versions to compare.");
      show("compare-errors", "");
      try {
        const result = await api("GET", `/api/v1/detectors/compare/?tags=${encodeURIComponent(tags.join(","))}`);
        const columns = result.versions || tags;
        const rows = (result.metrics || []).map((r) => [r.metric, ...r.values.map((v) => (typeof v === "number" ? fmt(v) : v === null ? "–" : String(v)))]);
        $("#compare-result").replaceChildren(table(["metric", ...columns.map((c) => (typeof c === "object" ? c.tag : c))], rows));
      } catch (err) {
        show("compare-errors", err.message);
      }
    });
    for (const button of form.querySelectorAll("[data-export]")) {
      button.addEventListener("click", async () => {
        const status = $(".export-status", button.parentElement);
        busy(button, true);
        show(status, "Exporting…", "muted");
        try {
          const out = await api("POST", `/api/v1/detectors/${encodeURIComponent(button.dataset.export)}/export/`);
          status.replaceChildren(el("a", { href: out.download, download: "", text: "Download bundle" }));
          status.className = "ok";
        } catch (err) {
          show(status, `Export failed: ${err.message}`);
        } finally {
          busy(button, false);
        }
      });
    }
    for (const button of form.querySelectorAll("[data-promote]")) {
      button.addEventListener("click", async () => {
        const status = $(".export-status", button.parentElement);
        try {
          await api("PUT", "/api/v1/detectors/aliases/production/", { tag: button.dataset.promote });
          show(status, "Now the production version (reload to see the alias).", "ok");
        } catch (err) {
          show(status, err.message);
        }
      });
    }
  }

  /* ----- try it: upload, P(fake), explanation, heatmap over the image ----- */
  function tryForm(form) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const data = new FormData(form);
      const file = data.get("images");
      if (!file || !file.size) return show("try-errors", "Choose an image file first.");
      const version = data.get("version");
      data.delete("version");
      const button = $("button[type=submit]", form);
      busy(button, true);
      show("try-errors", "");
      $("#try-result").replaceChildren(el("p", { class: "muted", text: "Analysing…" }));
      try {
        const out = await api("POST", `/api/v1/detectors/${encodeURIComponent(version)}/predict/`, data);
        const url = URL.createObjectURL(file);
        const blocks = [el("p", { text: `${out.version} (${out.kind}, ${out.backend})` })];
        for (const result of out.results) {
          for (const [i, face] of result.faces.entries()) {
            const overlay = await colorize(`data:image/png;base64,${face.heatmap_png}`);
            const verdict = face.prob_fake >= 0.5 ? "likely fake" : "likely real";
            const stack = el("div", { class: "stack try" }, el("img", { src: url, alt: `Uploaded image ${result.name}` }), el("img", { class: "overlay heat", src: overlay, alt: `Heatmap of face ${i + 1}: where the detector sees manipulation` }));
            const nodes = face.node_probs ? Object.entries(face.node_probs).map(([k, v]) => `${k} ${fmt(v, 2)}`).join(", ") : "";
            blocks.push(el("section", { class: "face" },
              el("h2", { text: `Face ${i + 1}: P(fake) = ${fmt(face.prob_fake)} (${verdict})` }),
              el("p", { class: "muted", text: `box ${JSON.stringify(face.box)}; logit ${fmt(face.logit)}` }),
              ...(typeof face.explanation === "string" ? [el("p", { text: face.explanation })] : face.explanation ? [el("p", { text: JSON.stringify(face.explanation) })] : []),
              ...(nodes ? [el("p", { text: `Regions: ${nodes}` })] : []),
              stack,
              el("label", {}, el("input", { type: "range", min: "0", max: "100", value: "75", "aria-label": "Heatmap opacity", "data-opacity": "" }), " heatmap opacity")));
          }
        }
        $("#try-result").replaceChildren(...blocks);
        for (const slider of document.querySelectorAll("[data-opacity]")) {
          slider.addEventListener("input", () => (slider.closest(".face").querySelector(".overlay.heat").style.opacity = slider.value / 100));
        }
      } catch (err) {
        $("#try-result").replaceChildren();
        show("try-errors", err.message);
      } finally {
        busy(button, false);
      }
    });
  }

  /* ----- users: add ----- */
  function userForm(form) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const data = Object.fromEntries(new FormData(form));
      if (!data.email) delete data.email;
      try {
        await api("POST", "/api/v1/users/", data);
        window.location.reload();
      } catch (err) {
        show("user-errors", `The user was not added. ${err.message}`);
      }
    });
  }

  /* ----- annotation queue: "I have signed up" links the Label Studio account by email ----- */
  function onboarding(card) {
    const button = $("[data-action=link]", card);
    if (!button) return;
    button.addEventListener("click", async () => {
      busy(button, true);
      show("onboarding-errors", "");
      try {
        const state = await api("POST", "/api/v1/labeling/me");
        if (state.error) return show("onboarding-errors", state.error);
        if (state.status === "joined") return window.location.reload();
        show("onboarding-errors", state.status === "removed"
          ? "Your Label Studio access is still removed: ask an admin to restore it."
          : `No Label Studio account with the email ${state.email} yet: sign up with exactly that email through the invite link.`);
      } catch (err) {
        show("onboarding-errors", err.message);
      } finally {
        busy(button, false);
      }
    });
  }

  const wiring = { import: importForm, launch: launchForm, round: roundPage, compare: detectorsPage, try: tryForm, user: userForm, onboarding };
  document.addEventListener("DOMContentLoaded", () => {
    // getAttribute, not node.dataset: a form's named control ("dataset") shadows its dataset property.
    for (const node of document.querySelectorAll("[data-js]")) {
      const name = node.getAttribute("data-js");
      if (wiring[name]) wiring[name](node);
    }
    gallery();
  });
})();
