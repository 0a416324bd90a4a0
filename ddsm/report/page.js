// Draws a ddsm search report from the JSON in #ddsm-data (ddsm/report/html.py writes both); plotly is inline.
// Everything shown comes from that document, so a new per-step choice is one more row of a member's `passes`.
(function () {
  "use strict";
  const D = JSON.parse(document.getElementById("ddsm-data").textContent);
  const pct = (v) => (100 * v).toFixed(1) + "%";
  const fmt = (v) => (v === null || v === undefined ? "n/a" : Number(v).toPrecision(4));
  const el = (id) => document.getElementById(id);
  const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]));
  const hasSeconds = D.front.every((m) => m.seconds !== null) && D.full.seconds !== null;
  let xMode = "share";

  el("title").textContent = D.title;
  el("summary").textContent = `${D.front.length} front members within ${pct(D.budget)} of the full-width ${D.cost}; ` +
    `${D.quality} (lower is better) on the search's seeds; ${D.sampler}; ${D.generations} generations; ${D.search}`;

  function xOf(share, seconds) { return xMode === "seconds" ? seconds : 100 * share; }
  const xTitle = () => (xMode === "seconds" ? "measured seconds per sampling run" : `cost (% of full-width ${D.cost})`);

  function drawFront() {
    const traces = [{
      name: `evaluated (${D.evaluated.share.length})`, x: D.evaluated.share.map((s) => 100 * s), y: D.evaluated.quality,
      mode: "markers", type: "scatter", marker: { color: "rgba(120,120,120,0.35)", size: 6 }, hoverinfo: "skip",
      visible: xMode === "share" ? true : "legendonly",
    }];
    const styles = [["square", "#2ca02c"], ["diamond", "#9467bd"], ["triangle-up", "#ff7f0e"], ["cross", "#8c564b"]];
    D.families.forEach((f, k) => traces.push({
      name: f.name, x: f.share.map((s) => 100 * s), y: f.quality, text: f.labels, mode: "markers", type: "scatter",
      marker: { symbol: styles[k % styles.length][0], color: styles[k % styles.length][1], size: 9 },
      hovertemplate: "%{text}<br>%{x:.1f}% cost, " + D.quality + " %{y:.4g}<extra>" + f.name + "</extra>",
      visible: xMode === "share" ? true : "legendonly",
    }));
    const judged = D.front.filter((m) => m.verdict !== null);
    if (judged.length) {
      traces.push({ name: `judged by the verdict (${judged.length})`, x: judged.map((m) => xOf(m.share, m.seconds)),
        y: judged.map((m) => m.quality), mode: "markers", type: "scatter", hoverinfo: "skip",
        marker: { symbol: "circle-open", size: 17, color: "#d62728", line: { width: 2 } } });
    }
    traces.push({
      name: `Pareto front (${D.front.length})`, uid: "front", x: D.front.map((m) => xOf(m.share, m.seconds)),
      y: D.front.map((m) => m.quality), customdata: D.front.map((m, i) => i), mode: "lines+markers", type: "scatter",
      line: { shape: "hv", color: "#1f77b4" }, marker: { size: 10, color: "#1f77b4" },
      text: D.front.map((m) => `#${m.rank}`),
      hovertemplate: "%{text}: %{x:.3g}, " + D.quality + " %{y:.4g}<extra>front</extra>",
    });
    if (D.full.quality !== null) {
      traces.push({ name: `full width (${D.full.how})`, x: [xOf(1, D.full.seconds)], y: [D.full.quality],
        mode: "markers", type: "scatter", marker: { symbol: "star", size: 14, color: "black" } });
    }
    const layout = {
      title: { text: `${D.quality} against cost`, font: { size: 14 } }, xaxis: { title: { text: xTitle() } },
      yaxis: { title: { text: `${D.quality} (lower is better)` } }, legend: { orientation: "h", y: -0.25 },
      margin: { t: 40, r: 10 }, hovermode: "closest",
      shapes: xMode === "share" ? [{ type: "line", x0: 100 * D.budget, x1: 100 * D.budget, yref: "paper", y0: 0, y1: 1,
        line: { dash: "dot", color: "#d62728" } }] : [],
    };
    Plotly.react("front", traces, layout, { displaylogo: false, responsive: true });
  }

  function showMember(i) {
    const m = D.front[i];
    el("detail-rank").textContent = `#${m.rank} of ${D.front.length}`;
    const words = m.verdict === null ? (D.verdict ? "not judged by the verdict given" : "no verdict given")
      : m.verdict;
    const img = m.grid ? `<img alt="samples of #${m.rank}" src="${m.grid}">` : "";
    const full = m.grid && D.full.grid ? `<img alt="samples at full width" src="${D.full.grid}">` : "";
    el("detail").innerHTML =
      `<p><b>#${m.rank}</b>: ${pct(m.share)} of the full-width ${D.cost}, ${D.quality} ${fmt(m.quality)}` +
      (m.seconds !== null ? `, ${fmt(m.seconds)} s measured` : "") + ` (found in generation ${m.generation})</p>` +
      `<p id="detail-widths">widths per step: ${esc(m.passes[0].values.join(", "))}</p>` +
      m.passes.slice(1).map((p) => `<p>${esc(p.name)} per step: ` +
        `${esc(p.values.map((v) => (v === null ? "none" : v)).join(", "))}</p>`).join("") +
      `<p>verdict: <span id="detail-verdict">${esc(words)}</span></p>` +
      `<p>file: <code>${esc(m.file || "not exported (give --export)")}</code></p>` +
      `<p>sample with: <code>${esc(m.command)}</code></p>` +
      (img ? `<p>${img}${full}<br><span class="note">seeds ${D.samples.seed}..${D.samples.seed + D.samples.num - 1}: ` +
        `this member, then full width</span></p>` : `<p class="note">${esc(D.samples.note)}</p>`);
    const rows = m.passes.slice().reverse();
    const steps = rows[0].values.length;
    Plotly.react("heatmap", [{
      type: "heatmap", z: rows.map((r) => r.values), x: [...Array(steps).keys()].map((k) => k + 1),
      y: rows.map((r) => r.name), zmin: Math.min(...D.widths), zmax: Math.max(...D.widths), colorscale: "Viridis",
      hovertemplate: "step %{x}: %{z}<extra>%{y}</extra>", colorbar: { title: { text: "width" }, len: 1 },
    }], { margin: { t: 10, l: 100, b: 40 }, xaxis: { title: { text: "sampling step (1 = noisiest)" }, dtick: 1 } },
    { displaylogo: false, responsive: true });
  }

  function drawVerdict() {
    if (!D.verdict) {
      el("verdict").innerHTML = '<p class="note">No verdict given: pass --verdict CSV, or an --export made with ' +
        "--verdict N, to see each schedule against full width on held-out seeds.</p>";
      el("metric").disabled = true;
      return;
    }
    const sel = el("metric");
    if (!sel.options.length) {
      D.verdict.metrics.forEach((m) => sel.add(new Option(m, m)));
      sel.onchange = drawVerdict;
    }
    const metric = sel.value || D.verdict.metrics[0];
    el("verdict-note").textContent = `Each schedule judged minus full width, paired 95% intervals on ${D.verdict.seeds}` +
      (D.verdict.n ? ` (n = ${D.verdict.n})` : "") + "; red: the interval excludes 0. Click a front member to open it.";
    const pts = D.verdict.points.filter((p) => p.metrics[metric] && p.metrics[metric].vs !== null);
    const mid = pts.map((p) => p.metrics[metric].vs);
    Plotly.react("verdict", [{
      type: "scatter", mode: "markers", x: pts.map((p) => 100 * p.share), y: mid, text: pts.map((p) => p.name),
      customdata: pts.map((p) => p.member),
      error_y: { type: "data", symmetric: false, array: pts.map((p, k) => p.metrics[metric].high - mid[k]),
        arrayminus: pts.map((p, k) => mid[k] - p.metrics[metric].low) },
      marker: { size: 9, color: pts.map((p) => (p.metrics[metric].differs ? "#d62728" : "#1f77b4")) },
      hovertemplate: "%{text}<br>%{x:.1f}% cost: %{y:.4g} against full width<extra></extra>",
    }], {
      xaxis: { title: { text: `cost (% of full-width ${D.cost})` } },
      yaxis: { title: { text: `${metric} − full width (${D.verdict.higher_is_better[metric] ? "higher" : "lower"} is better)` } },
      shapes: [{ type: "line", xref: "paper", x0: 0, x1: 1, y0: 0, y1: 0, line: { dash: "dash" } }],
      margin: { t: 10 },
    }, { displaylogo: false, responsive: true });
    el("verdict").on("plotly_click", (ev) => { const i = ev.points[0].customdata; if (i >= 0) showMember(i); });
  }

  function drawProgress() {
    Plotly.react("progress", [{ type: "scatter", mode: "lines+markers", x: D.history.map((h) => h.generation),
      y: D.history.map((h) => h.hypervolume), text: D.history.map((h) => `${h.front} members`),
      hovertemplate: "generation %{x}: hypervolume %{y:.4g}, %{text}<extra></extra>" }],
    { xaxis: { title: { text: "generation" }, dtick: 1 }, yaxis: { title: { text: "hypervolume of the front" } },
      margin: { t: 10 } }, { displaylogo: false, responsive: true });
    if (!D.sensitivity) {
      el("sensitivity").innerHTML = '<p class="note">The search ran without sensitivity probes (seeding.sensitivity).</p>';
      return;
    }
    const groups = {};
    D.sensitivity.forEach((r) => {
      const key = r.pass === "cond" ? `narrowed to width ${r.width}` :
        r.width === null ? "no guidance" : `unconditional pass at width ${r.width}`;
      (groups[key] = groups[key] || []).push(r);
    });
    Plotly.react("sensitivity", Object.entries(groups).map(([name, rs]) => ({ type: "scatter", mode: "lines+markers",
      name, x: rs.map((r) => `steps ${r.steps}`), y: rs.map((r) => r.degradation) })),
    { yaxis: { title: { text: `${D.quality} lost against full width` } }, margin: { t: 10 },
      showlegend: true, legend: { font: { size: 10 } } }, { displaylogo: false, responsive: true });
  }

  if (hasSeconds) {
    el("xaxis-label").hidden = false;
    el("xaxis").onchange = (e) => { xMode = e.target.value; drawFront(); };
  }
  drawFront();
  const front = el("front");
  const pick = (ev) => { const p = ev.points.find((q) => q.data.uid === "front"); if (p) showMember(p.customdata); };
  front.on("plotly_hover", pick);
  front.on("plotly_click", pick);
  drawVerdict();
  drawProgress();
  showMember(0);
  document.body.dataset.ready = "1";
})();
