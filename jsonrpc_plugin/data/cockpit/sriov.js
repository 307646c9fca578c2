/* The SR-IOV migration page: every answer comes from sriov-client (JSON on
 * stdout, one error line on stderr), run as root through cockpit.spawn,
 * because the service's client key is root-only. No build step: plain
 * ES2017 on Cockpit's own cockpit.js. */
/* global cockpit */
"use strict";

var CONFIG_NAME = "/.config/sriov-migration/cockpit.json";
var cfg = { client: ["sriov-client"], local: [], destinations: [], refresh: 3 };
var state = { vms: [], vfs: [], running: false, current: null, history: [], drain: null, names: {},
              historyKey: "", historyDue: true, vmKey: null, refreshes: 0 };
/* The recent migrations change only when one ends: asked for by the refresh after this page's
   migration or drain ends (historyDue), when the host's VMs change (one left or came), and every
   HISTORY_EVERY refreshes otherwise (a failed migration from elsewhere): once each time, and not
   one more sriov-client process on every refresh. */
var HISTORY_EVERY = 10;

function $(id) { return document.getElementById(id); }

function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
        if (k === "text") node.textContent = attrs[k];
        else if (k === "cls") node.className = attrs[k];
        else if (k === "width") node.style.width = attrs[k]; /* CSP: no style attributes */
        else node.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) {
        if (c !== null && c !== undefined)
            node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    });
    return node;
}

function fill(id, node) { var box = $(id); box.textContent = ""; if (node) box.appendChild(node); }

/* One line out of whatever went wrong: sriov-client's own message, or Cockpit's problem. */
function explain(ex) {
    if (ex && ex.problem === "access-denied")
        return "This session has no administrative access: switch to administrative access " +
               "(top right) to read the SR-IOV service, whose client key only root can read.";
    if (ex && ex.problem === "not-found")
        return "sriov-client is not installed on this host (package vdsm-hook-sriov-migration).";
    var text = String((ex && (ex.message || ex.problem)) || ex || "unknown error");
    var m = /\(code=(-?\d+), message=([^\n]*)\)/.exec(text);
    if (m) return m[2] + " (code " + m[1] + ")";
    var lines = text.split("\n").map(function (l) { return l.trim(); }).filter(Boolean);
    var useful = lines.filter(function (l) { return l.indexOf("sriov-client:") === 0; });
    return (useful.length ? useful[useful.length - 1] : lines[lines.length - 1] || text)
        .replace(/^sriov-client: /, "");
}

function errorCode(ex) {
    var m = /\(code=(-?\d+),/.exec(String((ex && ex.message) || ""));
    return m ? parseInt(m[1], 10) : null;
}

function unreachable(ex) { return /Connection to .* failed/.test(String((ex && ex.message) || "")); }

/* sriov-client [reach] SRIOV verb name=value...; resolves with the parsed JSON. */
function call(verb, params, reach) {
    var argv = cfg.client.concat(reach || cfg.local, ["SRIOV", verb]);
    Object.keys(params || {}).forEach(function (k) { argv.push(k + "=" + params[k]); });
    return cockpit.spawn(argv, { superuser: "require", err: "message" }).then(function (out) {
        return JSON.parse(out);
    });
}

/* The same, for a verb whose failure still prints its answer (rc 1 with the job or drain on
   stdout): resolves with {res} or {res, error}, or {error} when there is no answer. */
function callKeeping(verb, params) {
    var argv = cfg.client.concat(cfg.local, ["SRIOV", verb]);
    Object.keys(params).forEach(function (k) { argv.push(k + "=" + params[k]); });
    return cockpit.spawn(argv, { superuser: "require", err: "message" }).then(function (out) {
        return { res: JSON.parse(out) };
    }, function (ex, out) {
        try { return { res: JSON.parse(out || "null") || undefined, error: ex }; } catch (e) { return { error: ex }; }
    });
}

function dstReach(dst) {
    var args = ["-a", dst.address];
    if (dst.port) args.push("-p", String(dst.port));
    return (cfg.dst_args || []).concat(args);
}

function showNotice(text) {
    var box = $("notice");
    box.textContent = text || "";
    box.hidden = !text;
}

function showBanner(text) {
    var box = $("banner");
    box.textContent = text || "";
    box.hidden = !text;
}

function fmtTime(epoch) { return epoch ? new Date(epoch * 1000).toLocaleTimeString() : ""; }
function fmtMs(ms) { return ms === null || ms === undefined ? "…" : ms < 1000 ? Math.round(ms) + " ms" : (ms / 1000).toFixed(2) + " s"; }

/* -- the pool ---------------------------------------------------------- */

function vmName(id) {
    return state.names[id] || id; /* a VM that left keeps the name the page saw it under */
}

function renderPool(vfs, expires) {
    if (!vfs.length) return fill("pool", el("p", { cls: "muted", text: "This host has no VFs." }));
    var byPf = {};
    vfs.forEach(function (vf) { (byPf[vf.pf] = byPf[vf.pf] || []).push(vf); });
    var wrap = el("div");
    Object.keys(byPf).sort().forEach(function (pf) {
        var rows = byPf[pf].sort(function (a, b) { return a.index - b.index; });
        var free = rows.filter(function (r) { return r.state === "free"; }).length;
        wrap.appendChild(el("h3", { text: pf + " — " + free + " of " + rows.length + " free" }));
        var body = rows.map(function (r) {
            var what = "";
            if (r.state === "reserved")
                what = "for " + vmName(r.vm_id) + (expires[r.vm_id] ? " until " + fmtTime(expires[r.vm_id]) : "");
            else if (r.state === "in_use") what = vmName(r.vm_id || "") || "a VM";
            else if (r.state === "excluded") what = r.reason || "";
            return el("tr", { "data-vf": r.address, "data-state": r.state }, [
                el("td", { text: String(r.index) }), el("td", { text: r.address }),
                el("td", {}, [el("span", { cls: "badge " + r.state, text: r.state.replace("_", " ") })]),
                el("td", { text: what }),
                el("td", { text: (r.mac || "") + (r.vlan !== null && r.vlan !== undefined ? " vlan " + r.vlan : "") }),
                el("td", { text: r.numa_node === null || r.numa_node === undefined ? "–" : String(r.numa_node) })]);
        });
        wrap.appendChild(table(["VF", "address", "state", "VM / until / why", "MAC", "NUMA"], body, "pool-" + pf));
    });
    fill("pool", wrap);
}

function table(heads, rows, id) {
    return el("table", id ? { id: id } : {}, [
        el("thead", {}, [el("tr", {}, heads.map(function (h) { return el("th", { text: h }); }))]),
        el("tbody", {}, rows)]);
}

/* -- the VMs ----------------------------------------------------------- */

function renderVms(vms) {
    if (!vms.length) return fill("vms", el("p", { cls: "muted", text: "No running VM here has an SR-IOV vNIC." }));
    var wrap = el("div");
    vms.forEach(function (vm) {
        var ok = vm.plan.verdict === "migrate";
        /* being migrated, or its vNICs unplugged for a migration: the plan of the moment says nothing */
        var busy = (vm.migration && !vm.migration.done) || (!vm.plan.vnics.length && vm.recorded.length);
        var btn = el("button", { cls: "btn", text: "Migrate…", "data-vm": vm.vmID });
        btn.disabled = !ok || busy || state.running;
        btn.addEventListener("click", function () { openMigrate(vm); });
        var phase = vm.phase && vm.phase !== "idle" ? " · " + vm.phase : "";
        var badge = busy ? el("span", { cls: "badge reserved", text: "migrating" })
            : el("span", { cls: "badge " + (ok ? "free" : "excluded"), text: ok ? "migratable" : "not migratable" });
        wrap.appendChild(el("div", { cls: "vm", "data-vm": vm.vmID }, [
            el("div", { cls: "vm-head" }, [
                el("strong", { text: vm.name }), el("span", { cls: "muted", text: " " + vm.vmID + phase }),
                badge, btn]),
            ok || busy ? null : el("p", { cls: "why", text: vm.plan.reason }),
            table(["vNIC", "VF", "MAC", "VLAN", "failover partner", "migratable"], vnicRows(vm))]));
    });
    fill("vms", wrap);
}

function vnicRows(vm) {
    var list = vm.plan.vnics.length ? vm.plan.vnics : vm.recorded.map(function (r) {
        return { alias: r.alias, vf_address: r.vf_address, mac: r.mac, vlan: r.vlan, teaming: r.teaming,
                 migratable: null, state: r.state };
    });
    return list.map(function (n) {
        return el("tr", {}, [
            el("td", { text: n.alias || "" }), el("td", { text: n.vf_address || (n.state ? "(" + n.state + ")" : "") }),
            el("td", { text: n.mac || "" }), el("td", { text: n.vlan === null || n.vlan === undefined ? "–" : String(n.vlan) }),
            el("td", { text: n.teaming || "–" }),
            el("td", { text: n.migratable === null ? "–" : n.migratable ? "yes" : "no" })]);
    });
}

/* -- refresh ----------------------------------------------------------- */

var refreshing = false;

function refresh() {
    if (refreshing) return;
    refreshing = true;
    Promise.all([call("listVfs"), call("listVms")]).then(function (answers) {
        showBanner("");
        state.vfs = answers[0];
        state.vms = answers[1];
        state.vms.forEach(function (v) { state.names[v.vmID] = v.name; });
        var vmKey = state.vms.map(function (v) { return v.vmID; }).sort().join(",");
        if (state.historyDue || vmKey !== state.vmKey || state.refreshes % HISTORY_EVERY === 0) {
            state.historyDue = false;
            loadHistory();
        }
        state.vmKey = vmKey;
        state.refreshes += 1;
        var reserved = {};
        state.vfs.forEach(function (vf) { if (vf.state === "reserved" && vf.vm_id) reserved[vf.vm_id] = true; });
        return Promise.all(Object.keys(reserved).map(function (id) {
            return call("getReservation", { vmID: id }).then(function (r) { return [id, r.expires]; },
                function () { return [id, null]; });
        }));
    }).then(function (pairs) {
        var expires = {};
        pairs.forEach(function (p) { expires[p[0]] = p[1]; });
        renderPool(state.vfs, expires);
        renderVms(state.vms);
        $("refreshed").textContent = "updated " + new Date().toLocaleTimeString();
    }).catch(function (ex) {
        if (unreachable(ex))
            showBanner("The SR-IOV service on this host does not answer: " + explain(ex) +
                       ". Check it with: systemctl status sriov-migrationd");
        else
            showBanner(explain(ex));
    }).then(function () { refreshing = false; });
}

/* After this page's migration or drain: the next refresh asks for the recent migrations too (if
   one is under way now, the one after it does). */
function refreshWithHistory() {
    state.historyDue = true;
    refresh();
}

/* -- Migrate ----------------------------------------------------------- */

function openMigrate(vm) {
    state.current = { vm: vm };
    $("migrate-card").hidden = false;
    $("migrate-vm").textContent = vm.name;
    fill("plan", null);
    fill("timeline", null);
    $("confirm").hidden = true;
    $("dst").focus();
}

function chosenDst() {
    var text = $("dst").value.trim();
    var named = cfg.destinations.filter(function (d) { return d.name === text || d.address === text; })[0];
    var port = parseInt($("dst-port").value, 10) || 54325;
    return named ? { name: named.name, address: named.address, port: named.port || port }
        : { name: text, address: text, port: port };
}

function dryRun() {
    var cur = state.current;
    var dst = chosenDst();
    $("confirm").hidden = true;
    if (!dst.address) return fill("plan", el("p", { cls: "refusal", text: "Name a destination host first." }));
    cur.dst = dst;
    fill("plan", el("p", { cls: "muted", text: "Checking " + dst.name + "…" }));
    var vm = state.vms.filter(function (v) { return v.vmID === cur.vm.vmID; })[0];
    if (!vm) return fill("plan", el("p", { cls: "refusal", text: "VM " + cur.vm.name + " is no longer on this host." }));
    if (vm.plan.verdict !== "migrate")
        return fill("plan", el("p", { cls: "refusal", text: "Refused: " + vm.plan.reason }));
    call("ping", {}, dstReach(dst)).then(function () {
        return call("listVfs", {}, dstReach(dst));
    }).then(function (vfs) {
        var free = vfs.filter(function (v) { return v.state === "free"; }).length;
        var need = vm.plan.vnics.length;
        if (free < need)
            return fill("plan", el("p", { cls: "refusal", text: "Refused: " + dst.name + " has " + free +
                " free VF(s), this VM needs " + need + "." }));
        fill("plan", el("ol", { cls: "plan" }, [
            el("li", { text: "reserve " + need + " VF(s) on " + dst.name + " (" + free + " free there)" }),
            el("li", { text: "unplug " + vm.plan.vnics.map(function (n) { return n.alias + " (" + n.mac + ")"; }).join(", ") + " here" }),
            el("li", { text: "migrate through VDSM to " + dst.name }),
            el("li", { text: "plug the reserved VF(s) on " + dst.name + " with the same MAC, VLAN and alias" }),
            el("li", { text: "announce the MAC(s) from " + dst.name }),
            el("li", { cls: "muted", text: "policy: " + vm.plan.reason })]));
        $("confirm").hidden = false;
    }).catch(function (ex) {
        fill("plan", el("p", { cls: "refusal", text: unreachable(ex)
            ? "Destination " + dst.name + " does not answer: " + explain(ex) : explain(ex) }));
    });
}

function migrate() {
    var cur = state.current;
    $("confirm").hidden = true;
    state.running = true;
    var entry = { vm: cur.vm.name, vmID: cur.vm.vmID, dst: cur.dst.name, job: null, at: Date.now() };
    fill("timeline", el("p", { cls: "muted", text: "Starting…" }));
    var finished = false;
    var poll = window.setInterval(function () {
        call("migrationStatus", { vmID: cur.vm.vmID }).then(function (st) {
            if (st.migration && !finished) { entry.job = st.migration; renderTimeline(st.migration, "timeline"); }
        }, function () { /* the VM just left, or the service restarts: the final answer tells */ });
    }, 500);
    callKeeping("migrate", { vmID: cur.vm.vmID, dst: cur.dst.address, port: cur.dst.port }).then(function (r) {
        var res = { job: r.res, error: r.error };
        finished = true;
        window.clearInterval(poll);
        state.running = false;
        if (res.job) {
            entry.job = res.job;
            renderTimeline(res.job, "timeline");
            state.history.unshift(entry);
            renderHistory();
        } else {
            return call("migrationStatus", { vmID: cur.vm.vmID }).then(function (st) {
                if (st.migration && st.migration.done && st.migration.started * 1000 >= entry.at - 5000) {
                    entry.job = st.migration;
                    renderTimeline(st.migration, "timeline");
                    state.history.unshift(entry);
                    renderHistory();
                } else {
                    fill("timeline", el("p", { cls: "refusal", text: "Refused: " + explain(res.error) }));
                }
            }, function () {
                fill("timeline", el("p", { cls: "refusal", text: "Refused: " + explain(res.error) }));
            });
        }
    }).then(refreshWithHistory);
}

var STEP_LABEL = { check: "check", reserve: "reserve", unplug: "unplug", migrate: "VDSM migration",
                   plug: "plug", announce: "announce", rollback: "put back", release: "release" };

function renderTimeline(job, box) {
    var rows = job.steps.map(function (s) {
        var cells = [el("td", { text: fmtTime(s.start) }), el("td", { text: STEP_LABEL[s.step] || s.step }),
            el("td", {}, [el("span", { cls: "badge " + (s.ok === null ? "reserved" : s.ok ? "free" : "excluded"),
                text: s.ok === null ? "running" : s.ok ? "ok" : "failed" })]),
            el("td", { cls: "num", text: fmtMs(s.ms) })];
        var detail = el("td", { text: s.detail || "" });
        if (s.step === "migrate" && s.ms === null) {
            var pct = job.progress || 0;
            detail = el("td", {}, [el("div", { cls: "progress" }, [el("div", { cls: "bar", width: pct + "%" })]),
                el("span", { cls: "small", text: " " + pct + "%" })]);
        }
        cells.push(detail);
        return el("tr", { "data-step": s.step }, cells);
    });
    var outcome = job.done ? (job.phase === "migrated" ? "Migrated to " + job.dst + ", every vNIC plugged."
        : job.phase + ": " + (job.error || "")) : "In progress: " + job.phase;
    var put = (job.vnics || []).map(function (v) {
        return el("li", { text: v.mac + " (" + v.alias + "): " + v.state + " on " + (v.host === "source" ? "this host" : job.dst) +
            (v.error ? ": " + v.error : "") });
    });
    fill(box, el("div", {}, [table(["at", "step", "", "took", "detail"], rows),
        el("p", { cls: "outcome " + (job.done ? (job.phase === "migrated" ? "ok" : "bad") : ""), id: box + "-outcome", text: outcome }),
        put.length ? el("ul", { cls: "vnics" }, put) : null]));
}

/* -- history: NIC-absent time per migration (unplug until plug ends) ---- */

/* The service's own list (SRIOV.recentMigrations: every SRIOV.migrate it drove since it started,
   from this page, sriov-client or a drain); drawn again only when it changed, so an open timeline
   stays open. A service without the verb leaves the page its own session's list. */
function loadHistory() {
    call("recentMigrations").then(function (res) {
        var key = res.migrations.map(function (j) { return j.vmID + "@" + j.started; }).join(",");
        if (key === state.historyKey) return;
        state.historyKey = key;
        state.history = res.migrations.map(function (j) {
            return { vm: vmName(j.vmID), vmID: j.vmID, dst: j.dst, job: j, at: j.started * 1000 };
        });
        renderHistory();
    }, function (ex) { if (errorCode(ex) !== -32601) showNotice("Recent migrations: " + explain(ex)); });
}

function nicAbsentMs(job) {
    var by = {};
    (job.steps || []).forEach(function (s) { by[s.step] = s; });
    var start = by.unplug, end = by.plug || by.rollback;
    if (!start || !end || end.ms === null) return null;
    return (end.start - start.start) * 1000 + end.ms;
}

function renderHistory() {
    var items = state.history.slice(0, 10);
    var vals = items.map(function (h) { return nicAbsentMs(h.job) || 0; });
    var max = Math.max.apply(null, vals.concat([1]));
    var ns = "http://www.w3.org/2000/svg";
    var svg = document.createElementNS(ns, "svg");
    svg.setAttribute("width", "420"); svg.setAttribute("height", String(24 * items.length + 4));
    svg.setAttribute("role", "img"); svg.setAttribute("aria-label", "NIC-absent time per migration");
    items.forEach(function (h, i) {
        var r = document.createElementNS(ns, "rect");
        r.setAttribute("x", "150"); r.setAttribute("y", String(24 * i + 4)); r.setAttribute("height", "16");
        r.setAttribute("width", String(Math.max(1, 200 * vals[i] / max)));
        r.setAttribute("class", h.job && h.job.phase === "migrated" ? "ok" : "bad");
        var t = document.createElementNS(ns, "text");
        t.setAttribute("x", "0"); t.setAttribute("y", String(24 * i + 16));
        t.textContent = h.vm + " → " + h.dst;
        var v = document.createElementNS(ns, "text");
        v.setAttribute("x", String(156 + 200 * vals[i] / max)); v.setAttribute("y", String(24 * i + 16));
        v.textContent = vals[i] ? fmtMs(vals[i]) : "–";
        svg.appendChild(r); svg.appendChild(t); svg.appendChild(v);
    });
    fill("chart", items.length ? svg : null);
    fill("history", el("div", {}, items.map(function (h, i) {
        var box = el("div", { id: "history-" + i });
        var d = el("details", {}, [el("summary", { text: new Date(h.at).toLocaleTimeString() + "  " + h.vm +
            " → " + h.dst + ": " + (h.job ? h.job.phase : "?") }), box]);
        if (h.job) window.setTimeout(function () { renderTimeline(h.job, "history-" + i); });
        return d;
    })));
}

/* -- Drain (SRIOV.evacuate; -32601 where this host's service has no such verb) -- */

function drain(dryRun) {
    /* a name the page knows (its config's destinations) goes as its service's address:port */
    var dsts = $("drain-dsts").value.split(",").map(function (s) { return s.trim(); }).filter(Boolean)
        .map(function (text) {
            var d = cfg.destinations.filter(function (x) { return x.name === text; })[0];
            return d ? d.address + ":" + (d.port || 54325) : text;
        });
    if (!dsts.length) return fill("drain", el("p", { cls: "refusal", text: "Name one or more destinations, comma-separated." }));
    var par = parseInt($("drain-parallel").value, 10) || 1;
    $("drain-go").hidden = true;
    fill("drain", el("p", { cls: "muted", text: dryRun ? "Planning…" : "Draining…" }));
    /* sriov-client waits for the whole drain; its rows come live from evacuateStatus meanwhile */
    var began = Date.now() / 1000, finished = false;
    var live = dryRun ? null : window.setInterval(function () {
        call("evacuateStatus").then(function (st) {
            if (!finished && st.started >= began - 5) renderDrain(st);
        }, function () { /* planning still, or the service restarts: the final answer tells */ });
    }, 500);
    callKeeping("evacuate", { dsts: dsts.join(","), max_parallel: par, dry_run: dryRun ? "true" : "false" }).then(function (r) {
        finished = true;
        if (live) window.clearInterval(live);
        if (!r.res) {
            return fill("drain", el("p", { cls: "refusal", text: errorCode(r.error) === -32601
                ? "Drain is not available on this host's service." : explain(r.error) }));
        }
        state.drain = r.res;
        renderDrain(r.res, r.error);
        if (dryRun && r.res.plan && r.res.plan.feasible) $("drain-go").hidden = false;
    }).then(refreshWithHistory);
}

function drainState(r, dry) {
    if (r.outcome) return r.outcome;
    if (r.phase) return r.phase + (r.step ? " (" + r.step + ")" : "");
    return r.state || (dry ? "planned" : "");
}

function renderDrain(res, error) {
    /* A dry run answers {dry_run, plan: {feasible, vms: [placements], unplaced}}; a drain, its
       evacuateStatus: {plan, vms: [rows with state, phase, step, outcome, nic_absent_ms, error]}. */
    var plan = (res && res.plan) || {};
    var list = (res && res.vms) || plan.vms || [];
    (plan.unplaced || []).forEach(function (u) {
        list = list.concat([{ vmID: u.vmID, dst: "", state: "does not fit", reason: u.why }]);
    });
    var rows = list.map(function (r) {
        var absent = r.nic_absent_ms === null || r.nic_absent_ms === undefined ? "" : fmtMs(r.nic_absent_ms);
        return el("tr", { "data-vm": r.vmID || "" }, [el("td", { text: vmName(r.vmID) }), el("td", { text: r.dst || "" }),
            el("td", { cls: "drain-state", text: drainState(r, res.dry_run) }), el("td", { text: absent }),
            el("td", { text: r.reason || r.error || "" })]);
    });
    var verdict = res.ended ? el("p", { id: "drain-outcome", cls: res.state === "done" ? "outcome ok" : "outcome bad",
        text: res.state === "done" ? "Drain done: " + list.length + " VM(s) migrated."
            : "Drain " + res.state + "; left on this host: " + ((res.left || []).map(vmName).join(", ") || "none") + "." })
        : error && !res.dry_run ? el("p", { cls: "refusal", text: explain(error) }) : null;
    fill("drain", rows.length ? el("div", {}, [table(["VM", "to", "state", "NIC absent", "why"], rows), verdict])
        : el("p", { cls: "muted", text: "Nothing to drain: no VM with SR-IOV vNICs runs on this host." }));
}

/* -- start --------------------------------------------------------------- */

function loadConfig() {
    return cockpit.user().then(function (user) {
        return cockpit.file(user.home + CONFIG_NAME, { syntax: JSON }).read();
    }).then(function (data) {
        if (data) Object.keys(data).forEach(function (k) { cfg[k] = data[k]; });
    }).catch(function (ex) { showNotice("Ignoring " + CONFIG_NAME.slice(1) + ": " + explain(ex)); });
}

document.addEventListener("DOMContentLoaded", function () {
    $("host").textContent = cockpit.transport.host === "localhost" ? "" : cockpit.transport.host;
    $("dry-run").addEventListener("click", dryRun);
    $("confirm").addEventListener("click", migrate);
    $("dst").addEventListener("change", function () {
        var text = $("dst").value.trim();
        cfg.destinations.forEach(function (d) { if (d.name === text && d.port) $("dst-port").value = d.port; });
    });
    $("migrate-close").addEventListener("click", function () { $("migrate-card").hidden = true; });
    $("drain-plan").addEventListener("click", function () { drain(true); });
    $("drain-go").addEventListener("click", function () { drain(false); });
    loadConfig().then(function () {
        cfg.destinations.forEach(function (d) { $("dst-list").appendChild(el("option", { value: d.name })); });
        refresh();
        window.setInterval(refresh, (cfg.refresh || 3) * 1000);
    });
    cockpit.transport.wait(function () { });
});
