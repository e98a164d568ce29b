// sluice/detail/graph_view.hpp — the graph picture's CSS and JavaScript, written once and
// shared by the live page of metrics::serve (runtime/serve/) and the HTML report of
// `sluice bench --report` (tools/bench/report_html.cpp). Plain strings: including this
// needs no HTTP library.
//
// The script defines one global, SluiceGraphView:
//   const view = SluiceGraphView.create(element);   // draws into element (a <div>)
//   view.update(snapshot);                          // a parsed metrics::to_json object
// Each update redraws: a summary line (elapsed, bottleneck, stall), a legend, and an SVG
// with one box per stage (its fill and a stacked bar show busy / backpressured / starved
// shares; the bottleneck has a thick red border and a "bottleneck" badge), one arrow per
// channel labelled "occupancy / capacity". The drawing fits the window's width down to
// 0.6 of its size; a wider graph scrolls sideways. A stall is seen across updates: when no item
// has moved on any channel, for the graph's stall_threshold (the snapshot's
// stall_threshold_ns; none when it is zero) of the page's clock, while stages are blocked,
// the wait-for chain (who waits on which channel, held up by whom) is drawn in amber and
// spelled out in the summary.
//
// Requires: a browser with ES2017 and SVG; no network, no other script.
#pragma once

#include <string_view>

namespace sluice::detail {

inline constexpr std::string_view kGraphViewCss = R"sluicecss(
.sgv { font-family: "DejaVu Sans", Verdana, sans-serif; color: #212529; }
.sgv-summary { font-size: 15px; margin: 4px 0 6px 0; }
.sgv-summary b.bn { color: #c92a2a; }
.sgv-summary .stall { color: #e67700; font-weight: bold; }
.sgv-legend { font-size: 13px; margin: 0 0 8px 0; color: #495057; }
.sgv-legend span.sw { display: inline-block; width: 12px; height: 12px; margin: 0 4px -1px 12px;
                      border-radius: 2px; }
.sgv-legend span.sw.busy { background: #e03131; }
.sgv-legend span.sw.bp { background: #7048e8; }
.sgv-legend span.sw.starved { background: #74c0fc; }
.sgv-legend span.sw.bn { background: #fff; border: 3px solid #c92a2a; width: 8px; height: 8px; }
.sgv svg { display: block; max-width: 100%; height: auto; }
.sgv-scroll { overflow-x: auto; }
.sgv svg text { font-family: "DejaVu Sans", Verdana, sans-serif; }
)sluicecss";

inline constexpr std::string_view kGraphViewJs = R"sluicejs(
"use strict";
var SluiceGraphView = (function () {
  var SVGNS = "http://www.w3.org/2000/svg";
  var COLORS = { busy: [224, 49, 49], bp: [112, 72, 232], starved: [116, 192, 252] };
  var BOX_W = 204, BOX_H = 92, GAP_X = 100, GAP_Y = 46, PAD = 24, TOP = 34, MIN_SCALE = 0.6;

  // A map keyed by stage or channel names: no prototype, so a stage named "__proto__",
  // "constructor" or "toString" is a key like any other (with {} it stopped the drawing).
  function dict() { return Object.create(null); }

  function el(name, attrs, text) {
    var e = document.createElementNS(SVGNS, name);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function num(v) {
    v = Number(v) || 0;
    var a = Math.abs(v);
    if (a >= 1e9) return (v / 1e9).toFixed(a >= 1e10 ? 1 : 2) + "G";
    if (a >= 1e6) return (v / 1e6).toFixed(a >= 1e7 ? 1 : 2) + "M";
    if (a >= 1e4) return (v / 1e3).toFixed(a >= 1e5 ? 0 : 1) + "k";
    return String(Math.round(v));
  }
  function pct(x) { return Math.round(100 * (Number(x) || 0)) + "%"; }
  function secs(ns) {
    var s = (Number(ns) || 0) / 1e9;
    return s >= 100 ? s.toFixed(0) + " s" : s >= 10 ? s.toFixed(1) + " s" : s.toFixed(2) + " s";
  }
  function rgb(c) { return "rgb(" + c.map(function (x) { return Math.round(x); }).join(",") + ")"; }
  // The box's fill: the three colours mixed by share, lightened so the text stays legible.
  function fill(st) {
    var b = +st.busy_share || 0, p = +st.backpressured_share || 0, s = +st.starved_share || 0;
    var t = b + p + s;
    if (t <= 0) return "#f1f3f5";
    var c = [0, 0, 0];
    for (var i = 0; i < 3; i++) c[i] = (b * COLORS.busy[i] + p * COLORS.bp[i] + s * COLORS.starved[i]) / t;
    return rgb(c.map(function (x) { return x + (255 - x) * 0.72; }));
  }

  // Ranks by longest path from the stages nothing feeds; rows by the mean row of the
  // stages feeding each one (so a chain is a line and a fan-out opens up).
  function layout(stages, channels) {
    var idx = dict(), preds = dict(), succs = dict();
    stages.forEach(function (s, i) { idx[s.name] = i; preds[s.name] = []; succs[s.name] = []; });
    channels.forEach(function (c) {
      if (!(c.from in idx) || !(c.to in idx) || c.from === c.to) return;
      if (preds[c.to].indexOf(c.from) < 0) preds[c.to].push(c.from);
      if (succs[c.from].indexOf(c.to) < 0) succs[c.from].push(c.to);
    });
    var rank = dict();
    var visiting = dict();
    function rankOf(n) {
      if (n in rank) return rank[n];
      if (visiting[n]) return 0;  // a cycle cannot happen; stay finite if it does
      visiting[n] = true;
      var r = 0;
      preds[n].forEach(function (p) { r = Math.max(r, rankOf(p) + 1); });
      rank[n] = r;
      return r;
    }
    stages.forEach(function (s) { rankOf(s.name); });
    var cols = [];
    stages.forEach(function (s) { (cols[rank[s.name]] = cols[rank[s.name]] || []).push(s.name); });
    var row = dict();
    cols.forEach(function (col, ci) {
      if (ci > 0) {
        col.sort(function (a, b) {
          function bary(n) {
            if (!preds[n].length) return 0;
            return preds[n].reduce(function (acc, p) { return acc + row[p]; }, 0) / preds[n].length;
          }
          return bary(a) - bary(b) || idx[a] - idx[b];
        });
      }
      col.forEach(function (n, ri) { row[n] = ri; });
    });
    var maxRows = cols.reduce(function (m, c) { return Math.max(m, c ? c.length : 0); }, 1);
    var pos = dict();
    cols.forEach(function (col, ci) {
      var off = (maxRows - col.length) * (BOX_H + GAP_Y) / 2;
      col.forEach(function (n, ri) {
        pos[n] = { x: PAD + ci * (BOX_W + GAP_X), y: TOP + off + ri * (BOX_H + GAP_Y) };
      });
    });
    return { pos: pos, width: 2 * PAD + cols.length * BOX_W + Math.max(0, cols.length - 1) * GAP_X,
             height: TOP + maxRows * (BOX_H + GAP_Y) - GAP_Y + PAD };
  }

  // The wait-for chain, as the runtime's stall watchdog builds it (metrics::wait_link):
  // from each blocked stage, the channel it waits on and the stage holding it up (a push
  // waits on the consumer, a pop on the producer), followed while the holder is blocked
  // too; the longest chain wins. A chain that ends at an idle inlet (a stage fed from
  // outside: no input channel, no thread, so no busy time) is a graph waiting for input,
  // not a stall.
  function waitLinks(snap) {
    var chans = dict(), stages = dict(), fed = dict();
    (snap.channels || []).forEach(function (c) { chans[c.name] = c; fed[c.to] = true; });
    (snap.stages || []).forEach(function (s) { stages[s.name] = s; });
    function link(s) {
      if (!s || !s.blocked_on || s.state === "done" || s.state === "failed") return null;
      var c = chans[s.blocked_on];
      if (!c) return null;
      return { stage: s.name, op: s.blocked_op, channel: c.name,
               holder: s.blocked_op === "push" ? c.to : c.from };
    }
    var best = [];
    (snap.stages || []).forEach(function (s) {
      var chain = [], seen = dict(), cur = s, l;
      while (cur && !seen[cur.name] && (l = link(cur))) {
        seen[cur.name] = true;
        chain.push(l);
        cur = stages[l.holder];
      }
      if (cur && !link(cur) && !fed[cur.name] && !(Number(cur.busy_ns) > 0)) return;  // an idle inlet
      if (chain.length > best.length) best = chain;
    });
    return best;
  }
  function chainText(links) {
    return links.map(function (l) {
      return l.stage + " waits (" + l.op + ") on " + l.holder;
    }).join("; ");
  }
  function moved(a, b) {
    if (!a || !b || (a.channels || []).length !== (b.channels || []).length) return true;
    for (var i = 0; i < b.channels.length; i++) {
      if (a.channels[i].pushed !== b.channels[i].pushed || a.channels[i].popped !== b.channels[i].popped) return true;
    }
    return false;
  }

  function create(root) {
    root.classList.add("sgv");
    var summary = document.createElement("div");
    summary.className = "sgv-summary";
    var legend = document.createElement("div");
    legend.className = "sgv-legend";
    legend.innerHTML = "stage time:<span class=\"sw busy\"></span>busy<span class=\"sw bp\"></span>" +
      "backpressured (output full)<span class=\"sw starved\"></span>starved (input empty)" +
      "<span class=\"sw bn\"></span>bottleneck &nbsp; arrows: channel occupancy / capacity";
    // The drawing shrinks to the window, but not below MIN_SCALE of its size (names stay
    // readable: a 12-stage chain was drawn at 0.29, its names 4 px tall); past that, the
    // holder scrolls sideways.
    var holder = document.createElement("div");
    holder.className = "sgv-scroll";
    root.appendChild(summary);
    root.appendChild(legend);
    root.appendChild(holder);
    var lastMove = null;  // {snap, at}: the last update in which an item moved

    function update(snap) {
      var now = Number(snap.elapsed_ns) || 0;
      var stages = snap.stages || [], channels = snap.channels || [];
      var running = stages.some(function (s) { return s.state === "running" || s.state === "stuck"; });
      // Stall time is on the page's clock: how long this page has seen nothing move.
      var seen = (typeof performance !== "undefined" ? performance.now() : Date.now()) * 1e6;
      if (!lastMove || moved(lastMove.snap, snap) || now < lastMove.elapsed) {
        lastMove = { snap: snap, at: seen, elapsed: now };
      }
      var links = waitLinks(snap);
      var still = seen - lastMove.at;
      // A stall as the graph defines it: nothing moved for its stall_threshold (zero: the
      // watchdog is off, and so is this), not for a threshold of the page's own.
      var limit = snap.stall_threshold_ns !== undefined ? Number(snap.stall_threshold_ns) : 2e9;
      var stalled = running && limit > 0 && links.length > 0 && still >= limit;
      var inChain = dict();
      if (stalled) links.forEach(function (l) { inChain[l.stage] = true; inChain[l.holder] = true; });

      summary.innerHTML = "";
      function add(tag, cls, text) {
        var e = document.createElement(tag);
        if (cls) e.className = cls;
        e.textContent = text;
        summary.appendChild(e);
      }
      var done = stages.length > 0 && !running && stages.every(function (s) { return s.state !== "idle"; });
      // An external channel (its other side is outside the graph: a JetStream edge, bench's
      // clock) is counted apart; it has no arrow.
      var external = channels.filter(function (c) { return c.external || !c.from || !c.to; }).length;
      // A run that ended with a stage failed is no "finished" one (a probe: it said
      // "finished after 4.04 s ... bottleneck: ...", the failure only in one box's text).
      var failed = stages.filter(function (s) { return s.state === "failed"; }).map(function (s) { return s.name; });
      add("span", "", (done ? (failed.length > 0 ? "failed after " : "finished after ") : "running for ") + secs(now) + " \u00b7 " +
          stages.length + " stages \u00b7 " + (channels.length - external) + " channels" +
          (external > 0 ? " + " + external + " external" : "") + " \u00b7 ");
      if (snap.bottleneck) {
        add("span", "", "bottleneck: ");
        add("b", "bn", snap.bottleneck);
      } else {
        add("span", "", "no bottleneck (balanced, or too little time accounted)");
      }
      if (failed.length > 0) {
        add("span", "", " \u00b7 ");
        add("span", "stall", "failed: " + failed.join(", "));
      }
      if (stalled) {
        add("span", "", " \u00b7 ");
        add("span", "stall", "STALL, no item moved for " + secs(still) + ": " + chainText(links));
      }

      var L = layout(stages, channels);
      var svg = el("svg", { xmlns: SVGNS, width: L.width, height: L.height,
                            viewBox: "0 0 " + L.width + " " + L.height, role: "img" });
      svg.appendChild(el("title", {}, "sluice graph"));
      var defs = el("defs", {});
      [["arrow", "#868e96"], ["arrow-full", "#c92a2a"], ["arrow-wait", "#e67700"]].forEach(function (m) {
        var mk = el("marker", { id: "sgv-" + m[0], viewBox: "0 0 10 10", refX: 9, refY: 5,
                                markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" });
        mk.appendChild(el("path", { d: "M0,0 L10,5 L0,10 z", fill: m[1] }));
        defs.appendChild(mk);
      });
      svg.appendChild(defs);

      // Channels: one arrow per producer/consumer pair, labels summed over parallel channels.
      var pairs = dict(), order = [];
      channels.forEach(function (c) {
        if (!(c.from in L.pos) || !(c.to in L.pos)) return;
        var k = c.from + "\u0000" + c.to;
        if (!pairs[k]) { pairs[k] = { from: c.from, to: c.to, size: 0, capacity: 0, weighted: !!c.weighted, n: 0 }; order.push(k); }
        pairs[k].size += Number(c.size) || 0;
        pairs[k].capacity += Number(c.capacity) || 0;
        pairs[k].n += 1;
      });
      var edges = el("g", { "class": "channels" });
      var labels = el("g", { "class": "channel-labels" });
      order.forEach(function (k) {
        var p = pairs[k], a = L.pos[p.from], b = L.pos[p.to];
        var x1 = a.x + BOX_W, y1 = a.y + BOX_H / 2, x2 = b.x - 2, y2 = b.y + BOX_H / 2;
        if (b.x <= a.x) { x1 = a.x + BOX_W / 2; y1 = a.y + BOX_H; x2 = b.x + BOX_W / 2; y2 = b.y - 2; }
        var dx = Math.max(30, (x2 - x1) / 2);
        var full = p.capacity > 0 && p.size >= 0.9 * p.capacity;
        edges.appendChild(el("path", {
          d: "M" + x1 + "," + y1 + " C" + (x1 + dx) + "," + y1 + " " + (x2 - dx) + "," + y2 + " " + x2 + "," + y2,
          fill: "none", stroke: full ? "#c92a2a" : "#868e96", "stroke-width": full ? 3 : 2,
          "marker-end": "url(#sgv-" + (full ? "arrow-full" : "arrow") + ")" }));
        var text = num(p.size) + " / " + num(p.capacity) + (p.weighted ? " B" : "");
        var mx = (x1 + x2) / 2, my = (y1 + y2) / 2;
        var w = 9 + 7.2 * text.length;
        var lab = el("g", { "class": "channel", "data-from": p.from, "data-to": p.to });
        lab.appendChild(el("rect", { x: mx - w / 2, y: my - 11, width: w, height: 20, rx: 4,
                                     fill: "#fff", stroke: full ? "#c92a2a" : "#ced4da" }));
        lab.appendChild(el("text", { x: mx, y: my + 4, "text-anchor": "middle", "font-size": 12,
                                     fill: full ? "#c92a2a" : "#495057", "font-weight": full ? "bold" : "normal" }, text));
        lab.appendChild(el("title", {}, p.from + " \u2192 " + p.to + ": " + p.size + " of " + p.capacity +
                                         (p.weighted ? " bytes" : " items") + (p.n > 1 ? " (" + p.n + " channels)" : "")));
        labels.appendChild(lab);
      });
      svg.appendChild(edges);

      // Stages.
      var boxes = el("g", { "class": "stages" });
      stages.forEach(function (s) {
        var p = L.pos[s.name];
        var bn = snap.bottleneck === s.name;
        var g = el("g", { "class": "stage" + (bn ? " bottleneck" : "") + (inChain[s.name] ? " stall" : ""),
                          "data-stage": s.name, transform: "translate(" + p.x + "," + p.y + ")" });
        g.appendChild(el("rect", { width: BOX_W, height: BOX_H, rx: 7, fill: fill(s),
                                   stroke: bn ? "#c92a2a" : inChain[s.name] ? "#e67700" : "#495057",
                                   "stroke-width": bn ? 5 : inChain[s.name] ? 4 : 1.5,
                                   "stroke-dasharray": (!bn && inChain[s.name]) ? "8 4" : "none" }));
        // Cut by code points: cutting UTF-16 units could leave half a surrogate pair, and
        // Chromium died (SIGILL) drawing one in SVG text.
        var chars = Array.from(s.name);
        var name = chars.length > 22 ? chars.slice(0, 21).join("") + "\u2026" : s.name;
        g.appendChild(el("text", { x: 10, y: 21, "font-size": 15, "font-weight": "bold", fill: "#212529" }, name));
        if ((+s.replicas || 1) > 1) {
          g.appendChild(el("text", { x: BOX_W - 8, y: 21, "font-size": 13, "text-anchor": "end", fill: "#495057" },
                           "\u00d7" + s.replicas));
        }
        g.appendChild(el("text", { x: 10, y: 40, "font-size": 12, fill: "#343a40" },
                         s.state + " \u00b7 " + num(s.items_in) + " in \u00b7 " + num(s.items_out) + " out"));
        var shares = "busy " + pct(s.busy_share) + "  bp " + pct(s.backpressured_share) +
                     "  starved " + pct(s.starved_share);
        g.appendChild(el("text", { x: 10, y: 57, "font-size": 11.5, fill: "#343a40", style: "white-space: pre" }, shares));
        if ((+s.errors || 0) > 0) {
          g.appendChild(el("text", { x: BOX_W - 8, y: 40, "font-size": 12, "text-anchor": "end",
                                     fill: "#c92a2a", "font-weight": "bold" }, num(s.errors) + " err"));
        }
        // The stacked bar: busy, backpressured, starved, left to right.
        var bx = 10, bw = BOX_W - 20, by = 66, bh = 16, t = (+s.busy_share || 0) + (+s.backpressured_share || 0) + (+s.starved_share || 0);
        g.appendChild(el("rect", { x: bx, y: by, width: bw, height: bh, fill: "#f8f9fa", stroke: "#adb5bd" }));
        if (t > 0) {
          var x = bx;
          [["busy_share", COLORS.busy], ["backpressured_share", COLORS.bp], ["starved_share", COLORS.starved]].forEach(function (q) {
            var w = bw * (+s[q[0]] || 0) / t;
            if (w > 0) g.appendChild(el("rect", { x: x, y: by, width: w, height: bh, fill: rgb(q[1]) }));
            x += w;
          });
        }
        if (bn) {
          var badge = el("g", { "class": "bottleneck-badge", transform: "translate(" + (BOX_W / 2 - 52) + ",-27)" });
          badge.appendChild(el("rect", { width: 104, height: 21, rx: 10, fill: "#c92a2a" }));
          badge.appendChild(el("text", { x: 52, y: 15, "text-anchor": "middle", "font-size": 13,
                                         "font-weight": "bold", fill: "#fff" }, "bottleneck"));
          g.appendChild(badge);
        }
        var tip = s.name + ": " + s.state + ", busy " + pct(s.busy_share) + ", backpressured " +
                  pct(s.backpressured_share) + ", starved " + pct(s.starved_share) +
                  (s.blocked_on ? ", blocked (" + s.blocked_op + ") on " + s.blocked_on : "");
        g.appendChild(el("title", {}, tip));
        boxes.appendChild(g);
      });
      svg.appendChild(boxes);
      svg.appendChild(labels);

      // A stall's wait-for chain: an amber dashed arrow from each waiting stage to its holder.
      if (stalled) {
        var waits = el("g", { "class": "wait-for" });
        links.forEach(function (l) {
          var a = L.pos[l.stage], b = L.pos[l.holder];
          if (!a || !b) return;
          var x1 = a.x + BOX_W / 2, y1 = a.y + BOX_H, x2 = b.x + BOX_W / 2, y2 = b.y + BOX_H + 3;
          var d = "M" + x1 + "," + y1 + " C" + x1 + "," + (y1 + 40) + " " + x2 + "," + (y2 + 40) + " " + x2 + "," + y2;
          waits.appendChild(el("path", { d: d, fill: "none", stroke: "#e67700", "stroke-width": 2.5,
                                         "stroke-dasharray": "6 4", "marker-end": "url(#sgv-arrow-wait)" }));
          waits.appendChild(el("text", { x: (x1 + x2) / 2, y: Math.max(y1, y2) + 36, "text-anchor": "middle",
                                         "font-size": 12, fill: "#e67700", "font-weight": "bold" }, "waits on"));
        });
        svg.appendChild(waits);
        svg.setAttribute("height", L.height + 50);
        svg.setAttribute("viewBox", "0 0 " + L.width + " " + (L.height + 50));
      }

      svg.style.minWidth = Math.round(L.width * MIN_SCALE) + "px";
      var scrolled = holder.scrollLeft;  // kept across redraws
      holder.innerHTML = "";
      holder.appendChild(svg);
      holder.scrollLeft = scrolled;
    }
    return { update: update };
  }
  return { create: create, layout: layout, waitLinks: waitLinks };
})();
)sluicejs";

}  // namespace sluice::detail
